"""example_dags/example_kling_chain.py through dag.test(): the edit takes the first clip as its input,
both videos are kept, and a re-run pays nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.dags import EXAMPLES, load_dag_file, run_dag

pytestmark = pytest.mark.airflow3


def generation_posts(emulator: Any) -> list[Any]:
    """The generation POSTs the emulator received on either endpoint."""
    return [r for r in emulator.requests if r.method == "POST" and r.endpoint is not None]


@pytest.fixture
def chain_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLING_DOWNLOAD_DIR", str(tmp_path / "videos"))
    monkeypatch.setenv("KLING_POLL_INTERVAL", "0.2")
    monkeypatch.setenv("KLING_TIMEOUT", "60")
    return tmp_path / "videos"


def test_chain_example_edits_the_first_clip_and_its_rerun_pays_nothing(
    emulator: Any, airflow_db: Any, chain_env: Path
) -> None:
    module = load_dag_file(EXAMPLES / "example_kling_chain.py")
    first = run_dag(module.dag)
    assert first.state == "success"
    clip, restyle = first.xcom("clip"), first.xcom("restyle")
    assert Path(clip["video_path"]).parent == chain_env / "chain" / "clips"
    assert Path(restyle["video_path"]).parent == chain_env / "chain" / "edits"
    assert Path(clip["video_path"]).read_bytes() == emulator.video_data(clip["generation_id"])
    assert Path(restyle["video_path"]).read_bytes() == emulator.video_data(restyle["generation_id"])

    sent = generation_posts(emulator)
    assert [p.json["model"] for p in sent] == [clip["model"], restyle["model"]]
    # The edit received the first generation's video: the service's own URL of it (no input_staging
    # on this connection, and the clip is stored locally), read fresh before the POST.
    edit_input = sent[1].json["video_url"]
    assert edit_input.split("?")[0] == clip["video_url"].split("?")[0]

    second = run_dag(module.dag)
    assert second.state == "success"
    assert len(generation_posts(emulator)) == 2  # nothing more was paid
    assert second.xcom("clip")["reused"] is True
    assert second.xcom("restyle")["reused"] is True
    assert second.xcom("restyle")["generation_id"] == restyle["generation_id"]
