"""The catalog batch example runs as shipped: by hand (no logical date), on its sample manifest, into a
local folder, through ``dag.test()`` against the emulator; its ``output`` param sends it to object
storage instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.dags import EXAMPLES, load_dag_file, posts, run_dag
from tests.support.s3_server import s3_fixture, s3_server_fixture  # noqa: F401  (fixtures)

# dag.test() of airflow.sdk DAGs and the test DAGs' helpers: Airflow 3 only.
pytestmark = pytest.mark.airflow3

POLL_INTERVAL = "0.2"

EXAMPLE = EXAMPLES / "example_kling_catalog_batch.py"
SAMPLE = EXAMPLES / "data" / "sample_manifest.jsonl"


@pytest.fixture
def dag_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example's environment: short polls and a private download folder; no path overrides."""
    downloads = tmp_path / "videos"
    monkeypatch.setenv("KLING_DOWNLOAD_DIR", str(downloads))
    monkeypatch.setenv("KLING_POLL_INTERVAL", POLL_INTERVAL)
    monkeypatch.delenv("KLING_CATALOG_MANIFEST", raising=False)
    monkeypatch.delenv("KLING_CATALOG_OUTPUT", raising=False)
    return downloads


def sample_rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]


def test_the_batch_example_runs_by_hand_on_its_sample_manifest_into_a_local_folder(
    emulator, airflow_db, dag_env
):
    module = load_dag_file(EXAMPLE)
    keys = [row["key"] for row in sample_rows()]

    first = run_dag(module.dag, logical_date=None)  # a manual run on Airflow 3: no ds

    assert first.state == "success"
    summary = first.xcom("catalog_videos")
    assert (summary["rows"], summary["completed"], summary["posts"]) == (len(keys), len(keys), len(keys))
    out = dag_env / "catalog"
    assert summary["results"] == str(out / "results.jsonl")
    assert sorted(p.stem for p in out.glob("*.mp4")) == sorted(keys)
    sent = {p.json["model"] for p in posts(emulator)}
    assert len(sent) == 4  # the sample spans four models
    assert {p.json["image_url"] for p in posts(emulator)} >= {module.FALLBACK_IMAGE}

    emulator.reset()
    again = run_dag(load_dag_file(EXAMPLE).dag, logical_date=None)  # re-run safe: nothing paid again
    assert again.state == "success"
    assert (again.xcom("catalog_videos")["posts"], again.xcom("catalog_videos")["reused"]) == (0, len(keys))
    assert posts(emulator) == []


def test_the_output_param_sends_the_batch_to_object_storage(emulator, airflow_db, dag_env, s3):
    module = load_dag_file(EXAMPLE)
    keys = [row["key"] for row in sample_rows()]

    result = run_dag(module.dag, logical_date=None, run_conf={"output": f"{s3.url}/videos/"})

    assert result.state == "success"
    summary = result.xcom("catalog_videos")
    assert summary["completed"] == len(keys)
    assert summary["results"] == f"{s3.url}/videos/results.jsonl"
    stored = s3.keys("videos/")
    assert {f"videos/{key}.mp4" for key in keys} <= set(stored)
    assert not Path(dag_env / "catalog").exists()
