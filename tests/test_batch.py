"""KlingBatchVideoOperator through ``dag.test()`` against the emulator (and the S3 server).

The batch DAGs are tests/dags/kling_batch.py; the manifest and output prefix come from the
environment. The 2,000-row runs are the issue's done-when figures: exactly one POST per row, one
video per row and a complete results manifest, also under ~20% injected faults.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.s3_server import s3, s3_server  # noqa: F401
from tests.test_example_dags import TEST_DAGS, load_dag_file, posts, run_dag

pytestmark = pytest.mark.airflow3
MODEL = "kling-video/v1/standard/image-to-video"
IMAGE = "https://images.example.org/catalog/sku.png"


def manifest_rows(n: int, tag: str, seconds: float = 1.0, **extra: Any) -> list[dict[str, Any]]:
    """``n`` rows keyed ``sku-00000``...; each prompt carries ``tag`` and a ``[seconds:N]`` marker."""
    return [
        {"key": f"sku-{i:05d}", "image_url": IMAGE, "prompt": f"{tag} item {i} [seconds:{seconds}]", **extra}
        for i in range(n)
    ]


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def batch_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLING_BATCH_POLL", "0.3")
    monkeypatch.setenv("KLING_BATCH_RETRIES", "2")
    monkeypatch.delenv("KLING_BATCH_PID_FILE", raising=False)
    return tmp_path


def run_batch(manifest: str, out: str, *, deferrable: bool = True, **env: str) -> Any:
    import os

    for name, value in env.items():
        os.environ[name] = value
    try:
        module = load_dag_file(TEST_DAGS / "kling_batch.py")
        dag = module.dag if deferrable else module.dag_polling
        return run_dag(dag, run_conf={"manifest": manifest, "output_prefix": out})
    finally:
        for name in env:
            os.environ.pop(name, None)


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_small_batch_defers_stores_every_video_and_writes_results(emulator, airflow_db, batch_env):
    rows = manifest_rows(12, "small", seconds=0.5)
    manifest = write_manifest(batch_env / "in" / "manifest.jsonl", rows)
    out = batch_env / "out"
    result = run_batch(manifest, str(out), KLING_BATCH_MAX_ACTIVE="4")

    assert result.state == "success", result.tis
    summary = result.xcom("batch")
    assert summary["rows"] == 12
    assert summary["completed"] == 12
    assert summary["failed"] == 0
    assert summary["posts"] == 12
    assert summary["results"] == str(out / "results.jsonl")
    assert len(json.dumps(summary)) < 1000  # a small summary, not the rows
    assert "deferred" in result.events[("batch", -1)]
    assert len(posts(emulator, "small")) == 12
    lines = read_results(out / "results.jsonl")
    assert [line["key"] for line in lines] == [r["key"] for r in rows]
    for line in lines:
        assert line["status"] == "completed"
        assert Path(line["video"]).name == f"{line['key']}.mp4"
        assert Path(line["video"]).stat().st_size == line["file_size"]
        assert line["usage"]["tokens_used"] > 0
        sidecar = json.loads(Path(line["video"] + ".kling.json").read_text())
        assert sidecar["generation_id"] == line["generation_id"]
    # The trigger rows hold ids only: no video URL, no request.
    classpath, kwargs = result.triggers[("batch", -1)]
    assert classpath.endswith("KlingBatchTrigger")
    assert "http" not in json.dumps(kwargs)
