"""Shared by the test DAGs: where they write, and a failure recorder (no DAG in this file)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any


def out_dir() -> str:
    """The folder a test gave the DAGs through KLING_TEST_OUT."""
    return os.environ.get("KLING_TEST_OUT", "/tmp/kling-test-dags")


def record_failure(context: Any) -> None:
    """on_failure / on_retry callback: append what failed, on which try and why, to events.jsonl."""
    ti = context["ti"]
    exc = context.get("exception")
    line = {
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
        "exception": type(exc).__name__ if exc is not None else None,
        "message": str(exc) if exc is not None else None,
    }
    os.makedirs(out_dir(), exist_ok=True)
    with open(os.path.join(out_dir(), "events.jsonl"), "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def record_resume(task_id: str, generation_id: str, status: str | None) -> None:
    """What a retry found for its stored generation (None: it submitted anew), to resumed.jsonl."""
    os.makedirs(out_dir(), exist_ok=True)
    line = {"task_id": task_id, "generation_id": generation_id, "status": status}
    with open(os.path.join(out_dir(), "resumed.jsonl"), "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def recorded_retries(**overrides: Any) -> dict[str, Any]:
    """default_args for test DAGs: two immediate retries, each failure and retry recorded."""
    return {
        "retries": 2,
        "retry_delay": timedelta(seconds=0),
        "on_retry_callback": record_failure,
        "on_failure_callback": record_failure,
        **overrides,
    }
