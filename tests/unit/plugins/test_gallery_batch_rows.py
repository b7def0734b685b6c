"""Batch rows in the gallery, through its real app (FastAPI's test client) and Airflow's metadata DB.

A real batch (tests/dags/kling_batch.py, against the emulator) writes its videos and results under the
streaming root; its XCom summary points the gallery at the results. Then a DAG a task author controls
(tests/dags/kling_gallery_hostile.py) returns batch summaries of its own choosing: a results manifest
it wrote naming /etc/passwd and the real batch's video, the real batch's results, and /etc/passwd
itself. Only the batch's own rows are listed for its DAG and streamed, under its DAG's read rights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.connections import API_KEY, set_connection
from tests.support.dags import TEST_DAGS, load_dag_file, run_dag
from tests.support.gallery import OPENED, signed_in_gallery, watching_opens

pytestmark = pytest.mark.airflow3

BATCH = "kling_batch_polling"
HOSTILE = "kling_gallery_hostile"
IMAGE = "https://images.example.org/catalog/sku.png"


@pytest.fixture(scope="module")
def runs(airflow_db: Path, _emulator_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One batch of three rows (one refused by the service), then the hostile summaries."""
    from airflow_provider_kling.plugins import supports_gallery

    if not supports_gallery():
        pytest.skip("the gallery needs Airflow 3.1+")
    emulator = _emulator_server
    emulator.reset()
    set_connection("kling_default", host=emulator.base_url, password=API_KEY)
    root = tmp_path_factory.mktemp("gallery-batch") / "videos"
    out = root / "batch"
    manifest = root.parent / "manifest.jsonl"
    rows = [
        {"key": "sku-1", "image_url": IMAGE, "prompt": "A teapot turning on a table [seconds:0.2]"},
        {"key": "sku-2", "image_url": IMAGE, "prompt": "A red kettle steaming [seconds:0.2]"},
        {"key": "sku-3", "image_url": IMAGE, "prompt": "A refused clip [error]"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.environ["KLING_BATCH_POLL"] = "0.2"
    try:
        module = load_dag_file(TEST_DAGS / "kling_batch.py")
        batch = run_dag(
            module.dag_polling,
            run_conf={"manifest": str(manifest), "output_prefix": str(out), "fail_on_partial": False},
        )
    finally:
        os.environ.pop("KLING_BATCH_POLL", None)
    assert batch.state == "success", batch.tis
    lines = {r["key"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}

    # A manifest the hostile DAG wrote under the root, with its own sidecar naming its own DAG.
    hostile = root / "hostile"
    hostile.mkdir()
    stolen = lines["sku-1"]
    forged = [
        {"key": "passwd", "generation_id": "gen-passwd", "status": "completed", "model": "m",
         "video_path": "/etc/passwd"},
        {"key": "stolen", "generation_id": stolen["generation_id"], "status": "completed", "model": "m",
         "video_path": stolen["video_path"]},
    ]  # fmt: skip
    (hostile / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forged))
    (hostile / "results.jsonl.kling.json").write_text(json.dumps({"dag_id": HOSTILE}))

    def summary(results: str) -> dict[str, Any]:
        return {"results": results, "output_prefix": str(hostile), "rows": 2, "completed": 2, "failed": 0}

    summaries = [
        summary(str(hostile / "results.jsonl")),
        summary(str(out / "results.jsonl")),  # another DAG's results
        summary("/etc/passwd"),
    ]
    bad = run_dag(load_dag_file(TEST_DAGS / "kling_gallery_hostile.py").dag, run_conf={"results": summaries})
    assert bad.state == "success"
    return {"root": root, "out": out, "lines": lines, "batch": batch, "hostile": bad}


@pytest.fixture
def client(runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The gallery app signed in as ``viewer``, streaming from the root only."""
    with signed_in_gallery(monkeypatch, str(runs["root"])) as test_client:
        yield test_client


def listing(client: Any, dag_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """The gallery's items of ``dag_id`` (of one run: other tests of this process run the same DAGs)."""
    params = {"dag_id": dag_id, "per_page": 100, **({"run_id": run_id} if run_id else {})}
    with watching_opens():
        answer = client.get("/api/generations", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def stream(client: Any, src: str) -> Any:
    with watching_opens():
        return client.get(src)


def test_a_batchs_rows_are_listed_from_its_results_and_their_videos_play(
    client: Any, runs: dict[str, Any]
) -> None:
    items = {item["batch_key"]: item for item in listing(client, BATCH, runs["batch"].run_id)}
    assert set(items) == {"sku-1", "sku-2", "sku-3"}
    for key in ("sku-1", "sku-2"):
        line, item = runs["lines"][key], items[key]
        assert item["generation_id"] == line["generation_id"]
        assert item["status"] == "completed"
        assert item["prompt"].startswith(("A teapot", "A red kettle"))
        assert item["task_id"] == "batch"
        assert item["video_src"], item
        played = stream(client, item["video_src"])
        assert played.status_code == 200, played.text
        assert played.content == Path(line["video_path"]).read_bytes()
        assert played.headers["content-type"] == "video/mp4"
        part = stream(client, item["video_src"])
        assert part.status_code == 200
    refused = items["sku-3"]
    assert refused["status"] == "failed"
    assert refused["video_src"] is None
    assert "Could not detect face" in refused["error"]
    # The page shows them too, each card naming its row.
    page = client.get("/", params={"dag_id": BATCH, "per_page": 100})
    assert page.text.count("<video") == 2
    assert page.text.count("data-batch-key=") == 3
    assert "Could not detect face" in page.text


def test_a_hostile_results_manifest_streams_neither_etc_passwd_nor_another_dags_video(
    client: Any, runs: dict[str, Any]
) -> None:
    OPENED.clear()
    items = listing(client, HOSTILE, runs["hostile"].run_id)
    # Only the rows of the manifest this DAG wrote itself: the other DAG's results are not listed
    # (their sidecar names their own DAG), /etc/passwd is never opened, nor is any video.
    assert sorted(item["batch_key"] for item in items) == ["passwd", "stolen"]
    assert "/etc/passwd" not in OPENED
    assert not [p for p in OPENED if p.endswith(".mp4")], OPENED
    by_key = {item["batch_key"]: item for item in items}
    assert by_key["passwd"]["video_src"] is None
    run_id = runs["hostile"].run_id
    for key in ("passwd", "stolen"):
        query = {"dag_id": HOSTILE, "run_id": run_id, "task_id": "report", "map_index": 0, "row": key}
        OPENED.clear()
        with watching_opens():
            answer = client.get("/video", params=query)
        assert answer.status_code == 404, (key, answer.text)
        assert answer.content != Path(runs["lines"]["sku-1"]["video_path"]).read_bytes()
        assert "/etc/passwd" not in OPENED
    # A row of the other DAG's results, asked through the hostile summary pointing at them.
    query = {"dag_id": HOSTILE, "run_id": run_id, "task_id": "report", "map_index": 1, "row": "sku-1"}
    assert client.get("/video", params=query).status_code == 404


def test_batch_rows_follow_the_viewers_dag_rights_and_the_roots(
    client: Any, runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    item = next(i for i in listing(client, BATCH, runs["batch"].run_id) if i["batch_key"] == "sku-1")
    monkeypatch.setenv("KLING_TEST_DENIED_DAGS", f"viewer:{BATCH}")
    assert listing(client, BATCH) == []
    assert stream(client, item["video_src"]).status_code == 403
    monkeypatch.setenv("KLING_TEST_DENIED_DAGS", "")
    monkeypatch.setenv("AIRFLOW__KLING__GALLERY_ROOTS", str(runs["root"] / "elsewhere"))
    OPENED.clear()
    assert listing(client, BATCH) == []
    assert stream(client, item["video_src"]).status_code == 404
    assert not [p for p in OPENED if p.startswith(str(runs["out"]))], OPENED


def test_the_task_filter_shows_one_tasks_generations(client: Any, runs: dict[str, Any]) -> None:
    answer = client.get(
        "/api/generations",
        params={"dag_id": BATCH, "run_id": runs["batch"].run_id, "task_id": "batch", "per_page": 100},
    )
    assert answer.json()["total"] == 3
    other = client.get("/api/generations", params={"dag_id": BATCH, "task_id": "no_such_task"})
    assert other.json()["total"] == 0
