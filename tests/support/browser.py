"""Headless Debian Chromium through ChromeDriver, shared by the browser tests (UI form, gallery).

Chromium and ChromeDriver come from Debian; scripts/ensure_chromium.sh installs them when missing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.deployment import ROOT, Deployment

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(name: str, shots: Path, *extra_flags: str) -> Iterator[Any]:
    """A fresh-profile headless Chromium with no background traffic; ``shots`` is created for screenshots.

    :param name: names the temporary profile folder.
    :param shots: the screenshot folder.
    :param extra_flags: more command-line flags (e.g. an autoplay policy).
    """
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure_chromium.sh")], check=True, timeout=900)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix=f"kling-{name}-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
        *extra_flags,
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def sign_in(
    browser: Any, deployment: Deployment, url: str, user: str, password: str, arrived: str = "/kling/"
) -> None:
    """Open ``url`` signed out: through the Simple auth manager's login page, then back to ``url``.

    A submit the login page drops (seen once in CI under load: 90 s later the browser was still on it)
    is made again, up to three times; a page that never lets the user in fails naming where it stayed.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.delete_all_cookies()
    browser.get(url)
    for _ in range(3):
        field = WebDriverWait(browser, 90).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, "input:not([type=password])"))
        )
        assert "/auth/login" in browser.current_url
        field.clear()
        field.send_keys(user)
        secret = browser.find_element(By.CSS_SELECTOR, "input[type=password]")
        secret.clear()
        secret.send_keys(password)
        browser.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
        try:
            WebDriverWait(browser, 30).until(
                lambda d: arrived in d.current_url and "/auth/login" not in d.current_url
            )
            return
        except TimeoutException:
            if "/auth/login" not in browser.current_url:
                break
    page = browser.find_element(By.TAG_NAME, "body").text[:500]
    raise AssertionError(f"signing in as {user!r} stayed at {browser.current_url} (page: {page!r})")
