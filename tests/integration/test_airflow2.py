"""Airflow 2.11 only: how the provider degrades where Airflow has no task_state_store.

On Airflow 3.3 a retry reconnects to the generation its first try paid for (tests of the resume feature
cover that). Airflow 2.11 has no task_state_store: the task must say so in its log, not fail, and its
retry submits a new generation. The DAG runs through Airflow's own ``airflow dags test`` in a fresh
process, so the warning is seen as a user would see it in the task log.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.connections import API_KEY

pytestmark = pytest.mark.airflow2

DAG_FILE = Path(__file__).parents[1] / "dags" / "no_state_store.py"
DEGRADE_LINE = (
    "This Airflow has no task_state_store (it arrived in 3.3): a retry of this task cannot find its "
    "earlier generation and may submit, and pay for, a new one"
)


def test_retry_without_task_state_store_warns_and_submits_anew(emulator, airflow_db, tmp_path):
    # The first try's download comes back short, so the task fails after the POST and is retried.
    emulator.inject("wrong_length", times=1, path_prefix="/_emulator/videos")
    env = dict(os.environ, KLING_TEST_OUT=str(tmp_path / "out"))
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "kling_no_state_store", "--subdir", str(DAG_FILE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    assert DEGRADE_LINE in output
    assert "file_size" in output  # the first try failed on the short download, as arranged
    # No resume: the retry paid for a second generation, and only its video was kept.
    assert emulator.count(method="POST") == 2
    videos = sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".mp4")
    assert len(videos) == 1, videos
    assert videos[0].endswith(".mp4")
    assert API_KEY not in output

    with sqlite3.connect(airflow_db / "airflow.db") as db:
        run_state = db.execute(
            "SELECT state FROM dag_run WHERE dag_id = 'kling_no_state_store' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        ti = db.execute(
            "SELECT state, try_number FROM task_instance WHERE dag_id = 'kling_no_state_store' "
            "AND task_id = 'generate' ORDER BY start_date DESC LIMIT 1"
        ).fetchone()
    assert run_state == ("success",)
    assert ti == ("success", 2)
