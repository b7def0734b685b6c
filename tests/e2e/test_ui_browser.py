"""The Airflow UI's connection form offers Kling, seen in a real headless Chromium.

Signs in through the Simple auth manager's login page, opens Admin -> Connections -> Add Connection,
picks Kling and checks the form shows the relabelled fields (API base URL, a masked API Key input)
and hides the unused ones, offers a field for each extra the hook reads, then saves a connection with
a daily USD cap typed in and reads it back through the REST API.
Screenshots go to test-artifacts/ui/. Chromium and ChromeDriver come from Debian
(scripts/ensure_chromium.sh installs them when missing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling.hooks._connection import endpoint_from_connection
from tests.support.browser import chromium, sign_in
from tests.support.deployment import ARTIFACTS, ROOT, Deployment, deployment_fixture  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.airflow3]

SHOTS = ARTIFACTS / "ui"
#: Not the deployment's key: what is typed here ends up in the metadata DB (encrypted).
UI_KEY = "typed-in-the-ui-form"
#: The labels of the fields holding the connection's extras.
EXTRA_LABELS = (
    "Endpoint",
    "Input staging prefix",
    "Daily USD cap",
    "Prices",
    "Lost-answer window (seconds)",
    "Lost-answer poll (seconds)",
    "Allow loopback downloads",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium("ui", SHOTS) as driver:
        yield driver


def test_connection_form_offers_kling(browser: Any, deployment: Deployment) -> None:
    from airflow.models.connection import Connection
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90)
    # A rerun against the same deployment starts from no such connection.
    deployment.http.delete(
        f"{deployment.base_url}/api/v2/connections/kling_from_ui",
        headers={"Authorization": f"Bearer {deployment.token()}"},
        timeout=30,
    )
    # Not signed in yet: the Simple auth manager's login page, then back to the connections list.
    url = f"{deployment.base_url}/connections"
    sign_in(
        browser, deployment, url, deployment.admin_user, deployment.admin_password, arrived="/connections"
    )
    wait.until(lambda d: d.current_url.rstrip("/").endswith("/connections"))

    add = wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Add Connection']")))
    add.click()
    dialog = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))
    combo = dialog.find_element(By.CSS_SELECTOR, "input[role=combobox]")
    combo.send_keys("Kling")
    options = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "[role=option]"))
    assert [o.text for o in options] == ["Kling"]
    combo.send_keys(Keys.ENTER)
    password = wait.until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog] input[name=password]"))
    )
    browser.save_screenshot(str(SHOTS / "connection-form-kling.png"))

    labels = {label.text.strip() for label in dialog.find_elements(By.TAG_NAME, "label")}
    assert {"API base URL", "API Key"} <= labels, labels
    assert not {"Login", "Port", "Schema", "Password", "Host"} & labels, labels
    assert password.get_attribute("type") == "password"
    assert password.get_attribute("placeholder") == "Apilaplas API key"
    api_key_label = dialog.find_element(By.XPATH, ".//label[normalize-space()='API Key']")
    assert api_key_label.get_attribute("for") == password.get_attribute("id")
    host = dialog.find_element(By.CSS_SELECTOR, "input[name=host]")
    assert host.get_attribute("placeholder").startswith("https://api.apilaplas.com")

    # Save a connection through the form and read it back through the REST API.
    dialog.find_element(By.CSS_SELECTOR, "input[name=connection_id]").send_keys("kling_from_ui")
    host.send_keys(deployment.emulator_url)
    password.send_keys(UI_KEY)
    browser.save_screenshot(str(SHOTS / "connection-form-filled.png"))

    # Every extra the hook reads has its own field, in the "Extra Fields" section (opening it folds
    # the standard fields away).
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Extra Fields']").click()
    cap = wait.until(
        ec.visibility_of_element_located(
            (
                By.XPATH,
                "//*[@role='dialog']//label[normalize-space()='Daily USD cap']"
                "/ancestor::*[.//input][1]//input",
            )
        )
    )
    labels = {label.text.strip() for label in dialog.find_elements(By.TAG_NAME, "label")}
    assert set(EXTRA_LABELS) <= labels, labels
    # The endpoint's dropdown names its empty choice instead of showing "null".
    dialog.find_element(
        By.XPATH, ".//label[normalize-space()='Endpoint']/ancestor::*[.//input][1]//input"
    ).click()
    choices = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "[role=option]"))
    assert [c.text for c in choices] == ["legacy", "unified", "default (legacy)"]
    browser.save_screenshot(str(SHOTS / "connection-form-endpoint.png"))
    cap.click()
    cap.send_keys("12.5")
    browser.save_screenshot(str(SHOTS / "connection-form-kling-extras.png"))
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Save']").click()
    wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))
    wait.until(lambda d: "kling_from_ui" in d.find_element(By.TAG_NAME, "body").text)
    browser.save_screenshot(str(SHOTS / "connections-list.png"))
    saved = deployment.api("GET", "/connections/kling_from_ui")
    assert saved["conn_type"] == "kling"
    assert saved["host"] == deployment.emulator_url
    # The form stores the cap as a number and the fields left empty as null: the hook reads both.
    extra = json.loads(saved["extra"])
    assert extra["daily_usd_cap"] == 12.5
    conn = Connection(conn_id="kling_from_ui", conn_type="kling", host=saved["host"], password=UI_KEY)
    conn.set_extra(saved["extra"])
    endpoint = endpoint_from_connection(conn)
    assert endpoint.daily_usd_cap == 12.5
    assert (endpoint.reconcile.window, endpoint.reconcile.poll) == (600.0, 10.0)
    assert endpoint.allow_loopback_downloads is False
    assert Path(SHOTS / "connection-form-kling.png").stat().st_size > 0
