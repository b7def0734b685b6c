"""The "Kling videos" gallery and the human review example, in the deployment of tests/support/deployment.py.

Gallery: ``kling_gallery`` (tests/dags/kling_gallery.py) makes three videos from three prompts with
two models against the emulator, downloaded under the deployment's home; ``kling_gallery_private``
makes one more, in a DAG the ``viewer`` user may not read (tests/support/auth_manager.py). Headless Chromium
signs in as the admin, opens the gallery, plays every video (``readyState >= 2``), filters by DAG and
model, pages, and opens the gallery embedded in the Airflow UI; then the viewer signs in and does not
see the private DAG's video, nor may stream it. Screenshots go to test-artifacts/gallery/.

Review: ``example_kling_review`` waits for a person after each generation; the tests answer through
the REST API: Publish copies the video to ``published/``, Regenerate starts a new run with the
revised prompt, whose video is then published.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from airflow_provider_kling.operators.kling import describe_usage
from tests.support.browser import chromium, sign_in
from tests.support.deployment import (  # noqa: F401
    ARTIFACTS,
    ROOT,
    Deployment,
    DeploymentError,
    deployment_fixture,
    wait_for,
)


def e2e(test: Any) -> Any:
    """Marks a test that runs in the real deployment (Airflow 3)."""
    return pytest.mark.e2e(pytest.mark.airflow3(test))


SHOTS = ARTIFACTS / "gallery"
GALLERY = "kling_gallery"
PRIVATE = "kling_gallery_private"
REVIEW = "example_kling_review"
#: task id -> (model, prompt), as in tests/dags/kling_gallery.py.
GALLERY_SHOTS = {
    "lighthouse": ("kling-video/v1.6/standard/text-to-video", "A lighthouse on a cliff at dusk"),
    "fox": ("kling-video/v1.6/standard/text-to-video", "A red fox trotting through fresh snow"),
    "city": ("klingai/v2.5-turbo/pro/text-to-video", "Neon city street in the rain at night"),
}
PRIVATE_PROMPT = "A private storyboard nobody else may see"


# ------------------------------------------------------------------------------------------ helpers


def token_for(deployment: Deployment, user: str, password: str) -> str:
    """A JWT for ``user`` from ``POST /auth/token``."""
    resp = requests.post(
        f"{deployment.base_url}/auth/token", json={"username": user, "password": password}, timeout=30
    )
    resp.raise_for_status()
    return str(resp.json()["access_token"])


def gallery_get(deployment: Deployment, token: str | None, path: str, **kwargs: Any) -> requests.Response:
    """GET ``/kling<path>`` with the token as Bearer (none: anonymous), redirects not followed."""
    headers = dict(kwargs.pop("headers", {}))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(
        f"{deployment.base_url}/kling{path}", headers=headers, timeout=60, allow_redirects=False, **kwargs
    )


def cards(browser: Any) -> list[dict[str, str]]:
    """The gallery cards on the page: dag id, generation id and prompt."""
    return list(
        browser.execute_script(
            "return [...document.querySelectorAll('article.card')].map(c => ({"
            "dag_id: c.dataset.dagId, generation_id: c.dataset.generationId,"
            "prompt: c.querySelector('.prompt').textContent,"
            "model: c.querySelector('.facts code').textContent,"
            "task_link: c.querySelector('a.task-link').getAttribute('href'),"
            "text: c.innerText}))"
        )
    )


def play_all(browser: Any) -> list[int]:
    """Play every video on the page (muted) until each has data for its current frame; their readyStates."""
    browser.execute_script(
        "document.querySelectorAll('video').forEach(v => { v.muted = true; v.play().catch(() => {}); });"
    )

    def ready() -> list[int] | None:
        states = browser.execute_script(
            "return [...document.querySelectorAll('video')].map(v => v.readyState);"
        )
        return states if states and all(s >= 2 for s in states) else None

    states = wait_for("every video to have its current frame", ready, timeout=60)
    # Pause on a frame a little into the clip, so the screenshot shows pictures.
    browser.execute_script(
        "document.querySelectorAll('video').forEach(v => {"
        " v.pause(); v.currentTime = Math.min(1, v.duration / 2 || 0); });"
    )
    wait_for("the seek to finish", ready, timeout=30)
    return states


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def gallery_runs(deployment: Deployment) -> dict[str, Any]:
    """One run of each gallery DAG, both finished; the Kling results of the public one by task id."""
    started = time.monotonic()
    run_id = deployment.trigger(GALLERY)
    private_run_id = deployment.trigger(PRIVATE)
    for dag_id, rid in ((GALLERY, run_id), (PRIVATE, private_run_id)):
        state = deployment.wait_run(dag_id, rid, timeout=300)
        assert state == "success", deployment.describe_run(dag_id, rid)
    results = {task: deployment.xcoms(GALLERY, run_id, task)["return_value"] for task in GALLERY_SHOTS}
    private = deployment.xcoms(PRIVATE, private_run_id, "secret")["return_value"]
    print(f"gallery runs done in {time.monotonic() - started:.1f} s")
    return {"run_id": run_id, "private_run_id": private_run_id, "results": results, "private": private}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium("gallery", SHOTS, "--autoplay-policy=no-user-gesture-required") as driver:
        yield driver


# ------------------------------------------------------------------------------------------ no deployment


def test_plugin_module_stays_light_and_matches_the_airflow_version() -> None:
    """Loading the plugin (every Airflow process does) imports neither FastAPI app nor template."""
    code = textwrap.dedent(
        """
        import sys
        from airflow_provider_kling.plugins import KlingGalleryPlugin, supports_gallery
        heavy = [m for m in sys.modules if m.startswith(("fastapi", "airflow_provider_kling.plugins."))]
        heavy += [m for m in ("airflow_provider_kling.operators.kling",) if m in sys.modules]
        assert not [m for m in heavy if not m.startswith("fastapi")], heavy
        views = KlingGalleryPlugin.external_views
        apps = KlingGalleryPlugin.fastapi_apps
        if supports_gallery():
            assert [v["destination"] for v in views] == ["nav", "dag"], views
            assert [a["url_prefix"] for a in apps] == ["/kling"], apps
        else:
            assert views == [] and apps == [], (views, apps)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_review_example_exists_only_where_hitl_does() -> None:
    from airflow_provider_kling.plugins import supports_gallery
    from tests.support.dags import load_dag_file

    module = load_dag_file(ROOT / "example_dags" / "example_kling_review.py")
    if supports_gallery():
        assert module.dag.dag_id == REVIEW
        assert set(module.dag.task_ids) == {"generate", "review", "publish", "regenerate"}
    else:
        assert not hasattr(module, "dag")


@pytest.mark.airflow3
def test_byte_ranges() -> None:
    from fastapi import HTTPException

    from airflow_provider_kling.plugins.gallery import byte_range

    assert byte_range(None, 1000) is None
    assert byte_range("bytes=0-99", 1000) == (0, 99)
    assert byte_range("bytes=900-", 1000) == (900, 999)
    assert byte_range("bytes=900-5000", 1000) == (900, 999)
    assert byte_range("bytes=-100", 1000) == (900, 999)
    assert byte_range("bytes=0-1,5-6", 1000) is None  # several ranges: the whole file
    with pytest.raises(HTTPException) as refused:
        byte_range("bytes=1000-", 1000)
    assert refused.value.status_code == 416
    with pytest.raises(HTTPException) as too_long:  # Python's int() refuses over 4,300 digits: not a 500
        byte_range("bytes=" + "9" * 5000 + "-", 1000)
    assert too_long.value.status_code == 416


# ------------------------------------------------------------------------------------------ gallery


@e2e
def test_plugin_is_loaded_with_its_view(deployment: Deployment) -> None:
    plugins = {p["name"]: p for p in deployment.api("GET", "/plugins")["plugins"]}
    plugin = plugins["kling_gallery"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/kling"]
    views = {v["destination"]: v for v in plugin["external_views"]}
    assert views["nav"]["url_route"] == "kling-videos"
    assert views["nav"]["href"] == "/kling/"
    assert views["dag"]["href"] == "/kling/?dag_id={DAG_ID}"
    # Airflow's UI shows only views with a route, one view per route: the tab has its own.
    assert views["dag"]["url_route"] == "kling-videos-dag"
    assert gallery_get(deployment, None, "/icon.svg").headers["content-type"].startswith("image/svg")


@e2e
def test_gallery_shows_plays_filters_and_pages(
    browser: Any, deployment: Deployment, gallery_runs: dict
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    run_id = gallery_runs["run_id"]
    base = f"{deployment.base_url}/kling/"
    sign_in(
        browser, deployment, f"{base}?dag_id={GALLERY}&run_id={run_id}", "admin", deployment.admin_password
    )

    # The three videos of the run, with their prompts, each playing.
    shown = cards(browser)
    assert len(shown) == 3, shown
    expected = {r["generation_id"]: r for r in gallery_runs["results"].values()}
    assert {c["generation_id"] for c in shown} == set(expected)
    for task_id, (model, prompt) in GALLERY_SHOTS.items():
        (card,) = [c for c in shown if c["prompt"].startswith(prompt)]
        assert card["model"] == model
        assert card["task_link"] == f"/dags/{GALLERY}/runs/{run_id}/tasks/{task_id}"
        result = gallery_runs["results"][task_id]
        assert "completed" in card["text"]
        assert describe_usage(result["usage"]) in card["text"], card["text"]
        assert f"{float(result['duration']):g} s" in card["text"]
    states = play_all(browser)
    assert len(states) == 3
    assert min(states) >= 2, states
    browser.save_screenshot(str(SHOTS / "gallery.png"))

    # Model filter through the page's own select: only the turbo clip.
    turbo = GALLERY_SHOTS["city"][0]
    Select(browser.find_element(By.NAME, "model")).select_by_value(turbo)
    wait.until(lambda d: parse_qs(urlsplit(d.current_url).query).get("model") == [turbo])
    only = cards(browser)
    assert len(only) == 1, only
    assert only[0]["prompt"].startswith(GALLERY_SHOTS["city"][1])
    browser.save_screenshot(str(SHOTS / "gallery-model-filter.png"))

    # DAG filter: all runs, then only the private DAG (the admin may read it).
    browser.get(base)
    everything = cards(browser)
    assert {GALLERY, PRIVATE} <= {c["dag_id"] for c in everything}
    Select(browser.find_element(By.NAME, "dag_id")).select_by_value(PRIVATE)
    wait.until(lambda d: parse_qs(urlsplit(d.current_url).query).get("dag_id") == [PRIVATE])
    private = cards(browser)
    assert private
    assert {c["dag_id"] for c in private} == {PRIVATE}
    assert gallery_runs["private"]["generation_id"] in {c["generation_id"] for c in private}

    # Pagination: two per page, newest first, the three clips over two pages.
    browser.get(f"{base}?dag_id={GALLERY}&run_id={run_id}&per_page=2")
    first = cards(browser)
    assert len(first) == 2
    assert "Page 1 of 2" in browser.find_element(By.CSS_SELECTOR, "nav.pager").text
    browser.find_element(By.CSS_SELECTOR, "a[rel=next]").click()
    wait.until(lambda d: "page=2" in d.current_url)
    second = cards(browser)
    assert len(second) == 1
    assert "Page 2 of 2" in browser.find_element(By.CSS_SELECTOR, "nav.pager").text
    assert {c["generation_id"] for c in first + second} == set(expected)
    browser.save_screenshot(str(SHOTS / "gallery-page-2.png"))

    # The same gallery inside the Airflow UI (its "Kling videos" navigation entry), in an iframe.
    browser.get(f"{deployment.base_url}/plugin/kling-videos")
    frame = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[src*='/kling/']"))[0]
    browser.switch_to.frame(frame)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "article.card"))
    browser.switch_to.default_content()
    time.sleep(1)  # let the frame's images settle for the picture
    browser.save_screenshot(str(SHOTS / "gallery-in-airflow.png"))


@e2e
def test_gallery_streams_reported_videos_with_ranges(deployment: Deployment, gallery_runs: dict) -> None:
    token = deployment.token()
    result = gallery_runs["results"]["fox"]
    body = Path(result["video_path"]).read_bytes()
    query = {"dag_id": GALLERY, "run_id": gallery_runs["run_id"], "task_id": "fox"}

    whole = gallery_get(deployment, token, "/video", params=query)
    assert whole.status_code == 200
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.content == body

    part = gallery_get(deployment, token, "/video", params=query, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(body)}"
    assert part.content == body[100:200]
    tail = gallery_get(deployment, token, "/video", params=query, headers={"Range": "bytes=-50"})
    assert tail.status_code == 206
    assert tail.content == body[-50:]
    beyond = gallery_get(deployment, token, "/video", params=query, headers={"Range": f"bytes={len(body)}-"})
    assert beyond.status_code == 416

    # Only what a Kling task reported: no task, no video; no way to name a file.
    missing = gallery_get(deployment, token, "/video", params={**query, "task_id": "no_such_task"})
    assert missing.status_code == 404
    named = gallery_get(deployment, token, "/video", params={**query, "video_path": "/etc/passwd"})
    assert named.content == body

    # Not signed in: the JSON API and the stream answer 401, the page sends the browser to log in.
    assert gallery_get(deployment, None, "/api/generations").status_code == 401
    assert gallery_get(deployment, None, "/video", params=query).status_code == 401
    page = gallery_get(deployment, None, "/")
    assert page.status_code in (302, 303, 307)
    assert "/auth/login" in page.headers["location"]


BATCH = "kling_batch"


@e2e
def test_batch_rows_show_in_the_gallery_and_its_dag_tab_and_play(
    browser: Any, deployment: Deployment
) -> None:
    """A batch's rows (from its results manifest) are cards; one plays; the DAG's own tab shows them."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tag = f"gallery-batch-{secrets.token_hex(3)}"
    rows = [
        {"key": f"clip-{i}", "image_url": "https://images.example.org/catalog/sku.png",
         "prompt": f"Batch clip {i} of a spinning top ({tag}) [seconds:1]"}
        for i in range(3)
    ]  # fmt: skip
    manifest = deployment.home / "manifests" / f"{tag}.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = deployment.videos / tag
    conf = {"manifest": str(manifest), "output_prefix": str(out), "max_active": 3}
    run_id = deployment.trigger(BATCH, conf=conf)
    assert deployment.wait_run(BATCH, run_id, timeout=600) == "success", deployment.describe_run(
        BATCH, run_id
    )
    lines = {r["key"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}

    listing = gallery_get(
        deployment, deployment.token(), "/api/generations", params={"dag_id": BATCH, "run_id": run_id}
    ).json()
    assert sorted(i["batch_key"] for i in listing["items"]) == sorted(lines)
    assert {i["generation_id"] for i in listing["items"]} == {r["generation_id"] for r in lines.values()}

    # The gallery page: one card per row, each with its prompt; a batch clip plays.
    wait = WebDriverWait(browser, 90)
    sign_in(
        browser,
        deployment,
        f"{deployment.base_url}/kling/?dag_id={BATCH}&run_id={run_id}",
        "admin",
        deployment.admin_password,
    )
    shown = cards(browser)
    assert sorted(c["prompt"] for c in shown) == sorted(r["prompt"] for r in rows)
    assert {c["generation_id"] for c in shown} == {r["generation_id"] for r in lines.values()}
    browser.execute_script(
        "const v = document.querySelector('article.card video'); v.muted = true; v.play().catch(() => {});"
    )
    player = wait_for(
        "a batch clip to play",
        lambda: browser.execute_script(
            "const v = document.querySelector('article.card video');"
            "return v && v.readyState >= 2 && v.duration > 0 ? {ready: v.readyState, duration: v.duration,"
            " src: v.getAttribute('src')} : null;"
        ),
        timeout=60,
    )
    assert player["ready"] >= 2
    assert player["duration"] > 0
    assert "row=clip-" in player["src"]
    browser.save_screenshot(str(SHOTS / "gallery-batch.png"))

    # The DAG's own "Kling videos" tab in the Airflow UI, embedding the gallery filtered to the DAG.
    browser.get(f"{deployment.base_url}/dags/{BATCH}")
    tab = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "a[href*='plugin/kling-videos-dag']"))[0]
    tab.click()
    wait.until(lambda d: "/plugin/kling-videos-dag" in d.current_url)
    frame = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"iframe[src*='/kling/?dag_id={BATCH}']"))[
        0
    ]
    browser.switch_to.frame(frame)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "article.card"))
    in_tab = cards(browser)
    assert {c["dag_id"] for c in in_tab} == {BATCH}
    assert {r["generation_id"] for r in lines.values()} <= {c["generation_id"] for c in in_tab}
    browser.switch_to.default_content()
    time.sleep(1)  # let the frame's images settle for the picture
    browser.save_screenshot(str(SHOTS / "gallery-dag-tab.png"))


HOSTILE = "kling_gallery_hostile"


@e2e
def test_results_naming_other_files_are_never_streamed_nor_run(browser: Any, deployment: Deployment) -> None:
    """A task's result names the api-server's files, a page that would run script and a javascript: link."""
    from selenium.webdriver.common.by import By

    page_file = deployment.videos / "hostile" / "page.html"
    page_file.parent.mkdir(parents=True, exist_ok=True)
    page_file.write_text("<script>document.title = 'owned'; localStorage.owned = '1'</script>")
    (page_file.parent / "page.html.kling.json").write_text('{"generation_id": "gen-html"}')
    secrets_file = deployment.home / "passwords.json"
    assert secrets_file.exists()
    results = [
        {"generation_id": "gen-secret", "status": "completed", "model": "m", "video_path": str(secrets_file)},
        {"generation_id": "gen-passwd", "status": "completed", "model": "m", "video_path": "/etc/passwd"},
        {
            "generation_id": "gen-up",
            "status": "completed",
            "model": "m",
            "video_path": f"{deployment.videos}/../passwords.json",
        },
        {"generation_id": "gen-html", "status": "completed", "model": "m", "video_path": str(page_file)},
        {"generation_id": "gen-js", "status": "completed", "model": "m", "video_url": "javascript:alert(1)"},
    ]
    run_id = deployment.trigger(HOSTILE, conf={"results": results})
    assert deployment.wait_run(HOSTILE, run_id, timeout=300) == "success", deployment.describe_run(
        HOSTILE, run_id
    )
    token = deployment.token()
    query = {"dag_id": HOSTILE, "run_id": run_id, "task_id": "report"}
    for index in range(3):
        refused = gallery_get(deployment, token, "/video", params={**query, "map_index": index})
        assert refused.status_code == 404, refused.text
        assert "password" not in refused.text.lower()
    inert = gallery_get(deployment, token, "/video", params={**query, "map_index": 3})
    assert inert.status_code == 200
    assert inert.headers["content-type"] == "application/octet-stream"
    assert inert.headers["x-content-type-options"] == "nosniff"
    assert inert.headers["content-security-policy"] == "sandbox; default-src 'none'"

    # In the browser: no javascript: link on the page, and the page file's script never runs here.
    sign_in(
        browser,
        deployment,
        f"{deployment.base_url}/kling/?dag_id={HOSTILE}",
        "admin",
        deployment.admin_password,
    )
    hrefs = browser.execute_script(
        "return [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))"
    )
    assert not [h for h in hrefs if h and h.strip().lower().startswith("javascript:")], hrefs
    assert not browser.find_elements(By.CSS_SELECTOR, "article[data-generation-id=gen-secret] video")
    browser.save_screenshot(str(SHOTS / "gallery-hostile.png"))
    browser.get(
        f"{deployment.base_url}/kling/video?dag_id={HOSTILE}&run_id={run_id}&task_id=report&map_index=3"
    )
    time.sleep(2)
    assert browser.title != "owned"
    browser.get(f"{deployment.base_url}/kling/?dag_id={HOSTILE}")
    assert browser.execute_script("return localStorage.getItem('owned')") is None


@e2e
def test_viewer_does_not_see_a_dag_it_may_not_read(
    browser: Any, deployment: Deployment, gallery_runs: dict
) -> None:
    viewer = token_for(deployment, deployment.viewer_user, deployment.viewer_password)
    # The auth manager itself denies the DAG to the viewer (the REST API agrees with the gallery).
    dags = requests.get(
        f"{deployment.base_url}/api/v2/dags",
        headers={"Authorization": f"Bearer {viewer}"},
        params={"limit": 1000},
        timeout=30,
    ).json()
    dag_ids = {d["dag_id"] for d in dags["dags"]}
    assert GALLERY in dag_ids
    assert PRIVATE not in dag_ids

    listing = gallery_get(deployment, viewer, "/api/generations", params={"per_page": 100}).json()
    stamps = [item["timestamp"] for item in listing["items"]]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    seen = {item["generation_id"] for item in listing["items"]}
    assert {r["generation_id"] for r in gallery_runs["results"].values()} <= seen
    assert gallery_runs["private"]["generation_id"] not in seen
    assert PRIVATE not in listing["dag_ids"]
    asked = gallery_get(deployment, viewer, "/api/generations", params={"dag_id": PRIVATE}).json()
    assert asked["items"] == []
    assert asked["total"] == 0

    private_video = {"dag_id": PRIVATE, "run_id": gallery_runs["private_run_id"], "task_id": "secret"}
    assert gallery_get(deployment, viewer, "/video", params=private_video).status_code in (403, 404)
    public_video = {"dag_id": GALLERY, "run_id": gallery_runs["run_id"], "task_id": "city"}
    assert gallery_get(deployment, viewer, "/video", params=public_video).status_code == 200

    # And in the browser, signed in as the viewer.
    sign_in(
        browser,
        deployment,
        f"{deployment.base_url}/kling/",
        deployment.viewer_user,
        deployment.viewer_password,
    )
    text = browser.find_element("tag name", "body").text
    assert PRIVATE_PROMPT not in text
    assert all(c["dag_id"] != PRIVATE for c in cards(browser))
    assert any(c["prompt"].startswith(GALLERY_SHOTS["lighthouse"][1]) for c in cards(browser))
    browser.save_screenshot(str(SHOTS / "gallery-viewer.png"))


# ------------------------------------------------------------------------------------------ review


def hitl_path(dag_id: str, run_id: str, task_id: str = "review") -> str:
    return f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"


def wait_for_review(deployment: Deployment, run_id: str) -> dict[str, Any]:
    """Wait until the run's review task waits for a person; its HITL detail."""

    def parked() -> bool:
        state = deployment.task_instance(REVIEW, run_id, "review")["state"]
        if state in ("failed", "upstream_failed"):
            raise DeploymentError(f"review of {run_id} is {state}\n{deployment.describe_run(REVIEW, run_id)}")
        return state == "awaiting_input"

    wait_for(f"{run_id} to wait for its review", parked, timeout=300)
    # Airflow 3.3 fails a parked task whose worker exit is reported after an answer has already
    # queued it again (the race of apache/airflow#67287, #72716, here for AWAITING_INPUT): a person
    # never answers that fast, so wait until the scheduler has seen the parking process end.
    ended = (
        "Received executor event with state success for task instance TaskInstanceKey("
        f"dag_id='{REVIEW}', task_id='review', run_id='{run_id}'"
    )
    wait_for(
        f"the worker of {run_id}'s review to exit", lambda: ended in deployment.log_text("scheduler"), 60
    )
    return dict(deployment.api("GET", hitl_path(REVIEW, run_id)))


def answer(deployment: Deployment, run_id: str, option: str, revised_prompt: str = "") -> dict[str, Any]:
    body = {"chosen_options": [option], "params_input": {"revised_prompt": revised_prompt}}
    return dict(deployment.api("PATCH", hitl_path(REVIEW, run_id), json=body))


@pytest.fixture(scope="module")
def review_runs(deployment: Deployment) -> dict[str, Any]:
    """Two runs of the review example, started together, each waiting for its review."""
    tag = secrets.token_hex(3)
    runs = {}
    for path in ("approve", "reject"):
        prompt = f"A paper lantern floating over a lake at night ({path} {tag})"
        run_id = deployment.trigger(REVIEW, conf={"prompt": prompt})
        runs[path] = {"run_id": run_id, "prompt": prompt}
    for run in runs.values():
        run["detail"] = wait_for_review(deployment, run["run_id"])
    return {"tag": tag, **runs}


@e2e
def test_review_body_shows_prompt_model_cost_and_gallery_link(
    browser: Any, deployment: Deployment, review_runs: dict
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run = review_runs["approve"]
    detail = run["detail"]
    assert detail["options"] == ["Publish", "Regenerate"]
    assert detail["response_received"] is False
    body = detail["body"]
    # The prompt is shown as typed: Markdown's special characters come escaped in the body.
    assert run["prompt"] in body.replace("\\", "")
    assert "kling-video/v1.6/standard/text-to-video" in body
    generated = deployment.xcoms(REVIEW, run["run_id"], "generate")["return_value"]
    assert describe_usage(generated["usage"]) in body, body
    link = body.split("gallery](", 1)[1].split(")", 1)[0]
    assert link.startswith(f"{deployment.base_url}/kling/?")
    assert parse_qs(urlsplit(link).query) == {"dag_id": [REVIEW], "run_id": [run["run_id"]]}
    # The link shows that one video to the admin.
    listing = gallery_get(deployment, deployment.token(), "/api/generations?" + urlsplit(link).query).json()
    assert [i["prompt"] for i in listing["items"]] == [run["prompt"]]

    # What the reviewer sees in the Airflow UI: the task's "Required Actions" tab.
    url = f"{deployment.base_url}/dags/{REVIEW}/runs/{run['run_id']}/tasks/review/required_actions"
    sign_in(browser, deployment, url, "admin", deployment.admin_password, arrived="required_actions")
    WebDriverWait(browser, 60).until(lambda d: run["prompt"] in d.find_element(By.TAG_NAME, "body").text)
    assert browser.find_elements(By.CSS_SELECTOR, f"a[href='{link}']")
    time.sleep(1)  # the form's fields settle
    # The revised prompt is optional: Publish needs nothing typed.
    assert browser.find_element(By.XPATH, "//button[normalize-space()='Publish']").is_enabled()
    browser.save_screenshot(str(SHOTS / "review.png"))


@e2e
def test_review_approve_publishes(deployment: Deployment, review_runs: dict) -> None:
    run_id = review_runs["approve"]["run_id"]
    answered = answer(deployment, run_id, "Publish")
    assert answered["chosen_options"] == ["Publish"]
    assert deployment.wait_run(REVIEW, run_id, timeout=180) == "success"
    states = {t: ti["state"] for t, ti in deployment.task_instances(REVIEW, run_id).items()}
    assert states == {
        "generate": "success",
        "review": "success",
        "publish": "success",
        "regenerate": "skipped",
    }
    published = deployment.xcoms(REVIEW, run_id, "publish")["return_value"]
    target = Path(published["published"])
    assert target.parent == deployment.videos / "published"
    assert target.read_bytes() == Path(published["source"]).read_bytes()


@e2e
def test_review_reject_regenerates_with_the_revised_prompt(deployment: Deployment, review_runs: dict) -> None:
    run_id = review_runs["reject"]["run_id"]
    revised = f"A paper lantern drifting into a starry sky, wide shot (revised {review_runs['tag']})"
    answer(deployment, run_id, "Regenerate", revised)
    assert deployment.wait_run(REVIEW, run_id, timeout=180) == "success"
    states = {t: ti["state"] for t, ti in deployment.task_instances(REVIEW, run_id).items()}
    assert states["publish"] == "skipped"
    assert states["regenerate"] == "success"

    def new_run() -> dict[str, Any] | None:
        runs = deployment.api("GET", f"/dags/{REVIEW}/dagRuns", params={"limit": 100})["dag_runs"]
        return next((r for r in runs if (r.get("conf") or {}).get("revises") == run_id), None)

    second = wait_for("the regenerated run", new_run, timeout=60)
    assert second["conf"]["prompt"] == revised
    detail = wait_for_review(deployment, second["dag_run_id"])
    shown = detail["body"].replace("\\", "")  # Markdown's special characters come escaped
    assert revised in shown
    assert run_id in shown
    generated = deployment.xcoms(REVIEW, second["dag_run_id"], "generate")["return_value"]
    assert generated["prompt"] == revised
    assert len(deployment.generations_for(revised)) == 1  # one paid generation for the revision

    answer(deployment, second["dag_run_id"], "Publish")
    assert deployment.wait_run(REVIEW, second["dag_run_id"], timeout=180) == "success"
    published = deployment.xcoms(REVIEW, second["dag_run_id"], "publish")["return_value"]
    assert published["generation_id"] == generated["generation_id"]
    assert Path(published["published"]).read_bytes() == Path(generated["video_path"]).read_bytes()
