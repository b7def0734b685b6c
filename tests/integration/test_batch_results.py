"""A batch's results as its users read them: each results row, and a failed batch's own error.

KlingBatchVideoOperator runs in this process (``execute`` with a task-instance context, as the task
runner calls it) against an emulator answering as the service does in 2026: signed video URLs
(``?cacheKey=...&ksTime=...``), credits usage, and the content policy's message for rows it refuses.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_kling.operators.kling import KlingBatchVideoOperator
from tests.support.connections import API_KEY, set_connection

pytestmark = pytest.mark.airflow3
IMAGE = "https://images.example.org/catalog/sku.png"
REFUSED = "The prompt was rejected by the content policy"


@pytest.fixture(scope="module")
def service() -> Iterator[Any]:
    from airflow_provider_kling.emulator import KlingEmulator

    with KlingEmulator(api_key=API_KEY, generation_seconds=0.2, answer_style="2026") as emu:
        yield emu


@pytest.fixture
def conn(service: Any) -> Any:
    service.reset()
    set_connection("kling_results", host=service.base_url, password=API_KEY)
    return service


def context(run_id: str = "run-1") -> dict[str, Any]:
    ti = types.SimpleNamespace(
        dag_id="batch_results",
        task_id="batch",
        run_id=run_id,
        map_index=-1,
        try_number=1,
        xcom_push=lambda **kwargs: None,
    )
    return {"ti": ti, "run_id": run_id}


def run_batch(rows: list[dict[str, Any]], tmp: Path, *, fail_on_partial_error: bool) -> Any:
    manifest = tmp / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    operator = KlingBatchVideoOperator(
        task_id="batch",
        kling_conn_id="kling_results",
        manifest=str(manifest),
        output_prefix=str(tmp / "out"),
        deferrable=False,
        poll_interval=0.2,
        max_active=20,
        fail_on_partial_error=fail_on_partial_error,
    )
    return operator.execute(context())


def results(tmp: Path) -> dict[str, dict[str, Any]]:
    lines = (tmp / "out" / "results.jsonl").read_text().splitlines()
    return {line["key"]: line for line in map(json.loads, lines)}


def test_each_row_carries_id_status_video_url_size_usage_and_error(conn: Any, tmp_path: Path) -> None:
    rows = [
        {"key": "good", "image_url": IMAGE, "prompt": "a good clip"},
        {"key": "refused", "image_url": IMAGE, "prompt": "a refused clip [error:2026]"},
    ]
    summary = run_batch(rows, tmp_path, fail_on_partial_error=False)
    assert (summary["completed"], summary["failed"]) == (1, 1)
    lines = results(tmp_path)
    good, refused = lines["good"], lines["refused"]

    video = tmp_path / "out" / "good.mp4"
    assert good["status"] == "completed"
    assert good["generation_id"]
    assert good["video_path"] == str(video)
    assert good["file_size"] == video.stat().st_size > 0
    assert good["usage"]["credits_used"] > 0
    assert good["error"] is None
    # The service's URL, without what signs it: the emulator's URL carried cacheKey and ksTime.
    (generation,) = [g for g in conn.generations.values() if g.prompt == "a good clip"]
    assert good["video_url"].startswith(f"{conn.base_url}/")
    assert good["video_url"].endswith("/output.mp4?<redacted>")
    assert generation.cache_key not in good["video_url"]
    text = (tmp_path / "out" / "results.jsonl").read_text()
    assert "cacheKey" not in text
    assert "ksTime" not in text

    assert refused["status"] == "failed"
    assert refused["generation_id"]
    assert refused["video_path"] is None
    assert refused["video_url"] is None
    assert refused["file_size"] is None
    assert REFUSED in refused["error"]

    # Beside the results, the task that wrote them (what the gallery checks before listing them).
    written_by = json.loads((tmp_path / "out" / "results.jsonl.kling.json").read_text())
    assert written_by["dag_id"] == "batch_results"
    assert written_by["task_id"] == "batch"
    sidecar = json.loads((tmp_path / "out" / "good.mp4.kling.json").read_text())
    assert (sidecar["generation_id"], sidecar["dag_id"]) == (good["generation_id"], "batch_results")


def test_a_failed_batch_names_ten_failed_rows_with_the_services_message_and_counts_the_rest(
    conn: Any, tmp_path: Path
) -> None:
    from structlog.testing import capture_logs

    rows = [{"key": "ok-0", "image_url": IMAGE, "prompt": "fine 0"}]
    rows += [
        {"key": f"bad-{i:02d}", "image_url": IMAGE, "prompt": f"bad {i} [error:2026]"} for i in range(13)
    ]
    rows += [{"key": "ok-1", "image_url": IMAGE, "prompt": "fine 1"}]
    with capture_logs() as logs, pytest.raises(AirflowFailException) as failed:
        run_batch(rows, tmp_path, fail_on_partial_error=True)

    message = str(failed.value)
    assert message.startswith("13 of 15 rows failed")
    assert str(tmp_path / "out" / "results.jsonl") in message
    named = [line.strip() for line in message.splitlines() if line.strip().startswith("bad-")]
    assert [line.split(":")[0] for line in named] == [f"bad-{i:02d}" for i in range(10)]
    assert all(REFUSED in line for line in named)
    assert "and 3 more" in message
    assert "bad-10" not in message
    assert "ok-0" not in message
    # The task log says the same (the results may sit in object storage the reader cannot open).
    logged = "\n".join(str(e.get("event", "")) for e in logs)
    assert "13 of 15 rows failed" in logged
    assert any(line.strip().startswith("bad-09:") and REFUSED in line for line in logged.splitlines())
    assert "and 3 more" in logged
    assert len(results(tmp_path)) == 15
