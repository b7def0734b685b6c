"""Running DAG files through ``dag.test()`` and reading back what the run left in the metadata DB.

Shared by the integration tests and the unit tests that drive one operator or sensor through Airflow.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from airflow_provider_kling.version_compat import AIRFLOW_V_3_2_PLUS
from tests.support.connections import API_KEY

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_dags"
TEST_DAGS = ROOT / "tests" / "dags"
#: A small playable MP4 to use as an input file. Not what the emulator serves for a generation when
#: PyAV is installed: compare downloads with ``emulator.video_data(generation_id)``.
SAMPLE_MP4 = (ROOT / "airflow_provider_kling" / "emulator" / "sample.mp4").read_bytes()


def load_dag_file(path: Path) -> ModuleType:
    """Import a DAG file afresh, so it reads the environment the test has just set."""
    name = f"kling_dagfile_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class DagRunResult:
    """What one ``dag.test()`` left in the metadata DB: task instances, XComs, audit events, triggers."""

    dag_id: str
    run_id: str
    state: str
    tis: dict[tuple[str, int], Any]
    xcoms: dict[tuple[str, int, str], Any]
    #: Airflow's audit log per task instance: "running", "deferred", "success", "failed", ... (before
    #: 3.2, whose dag.test() writes none: "running", then "deferred", "running" when the task left a
    #: trigger row, then its final state)
    events: dict[tuple[str, int], list[str]]
    #: The triggers the run's deferred tasks created, as stored: (classpath, kwargs).
    triggers: dict[tuple[str, int], tuple[str, dict[str, Any]]]

    def ti(self, task_id: str, map_index: int = -1) -> Any:
        return self.tis[(task_id, map_index)]

    def state_of(self, task_id: str, map_index: int = -1) -> str:
        return str(self.ti(task_id, map_index).state)

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        return self.xcoms[(task_id, map_index, key)]

    def map_indexes(self, task_id: str) -> list[int]:
        return sorted(mi for tid, mi in self.tis if tid == task_id)


def run_dag(dag: Any, **test_kwargs: Any) -> DagRunResult:
    """Run ``dag`` once with ``dag.test(**test_kwargs)`` and read back what it left in the metadata DB.

    ``logical_date=None`` runs it as a manual trigger does on Airflow 3 (no ``ds``, no data interval).
    Also checks, for every run, that no aiohttp session was left unclosed and that the API key is
    in no XCom, task state or trigger.
    """
    from airflow.models.log import Log
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        dr = dag.test(**test_kwargs)
        gc.collect()  # an unclosed aiohttp session warns when collected
    unclosed = [str(w.message) for w in caught if "Unclosed" in str(w.message)]
    assert not unclosed, unclosed

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id)
        ).all()
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag.dag_id, XComModel.run_id == dr.run_id)
        ).all()
        logs = session.scalars(
            select(Log).where(Log.dag_id == dag.dag_id, Log.run_id == dr.run_id).order_by(Log.id)
        ).all()
        events: dict[tuple[str, int], list[str]] = {}
        if not AIRFLOW_V_3_2_PLUS:
            # dag.test() writes audit-log events from 3.2: before, a task's deferral shows in the trigger
            # row it left, so its events are read from that row and its final state.
            for ti in tis:
                deferred = ["deferred", "running"] if ti.trigger_id is not None else []
                events[(ti.task_id, ti.map_index)] = ["running", *deferred, str(ti.state)]
        for entry in logs:
            if entry.task_id is not None:
                key = (entry.task_id, -1 if entry.map_index is None else entry.map_index)
                events.setdefault(key, []).append(entry.event)
        triggers = {}
        for ti in tis:
            if ti.trigger_id is not None:
                trigger = session.get(Trigger, ti.trigger_id)
                if trigger is not None:
                    triggers[(ti.task_id, ti.map_index)] = (trigger.classpath, dict(trigger.kwargs))
        result = DagRunResult(
            dag_id=dag.dag_id,
            run_id=dr.run_id,
            state=str(dr.state),
            tis={(ti.task_id, ti.map_index): _Detached(ti) for ti in tis},
            xcoms={(r.task_id, r.map_index, r.key): XComModel.deserialize_value(r) for r in rows},
            events=events,
            triggers=triggers,
        )
    # The run's whole XCom, task-state and trigger footprint must be free of the API key.
    assert API_KEY not in json.dumps(list(result.xcoms.items()), default=str)
    assert API_KEY not in json.dumps(task_state_rows(dag.dag_id, dr.run_id), default=str)
    assert API_KEY not in json.dumps(list(result.triggers.values()), default=str)
    return result


class _Detached:
    """The fields of a TaskInstance row the tests read, copied out of the session."""

    def __init__(self, ti: Any) -> None:
        self.task_id = ti.task_id
        self.map_index = ti.map_index
        self.state = ti.state
        self.try_number = ti.try_number
        self.max_tries = ti.max_tries
        self.rendered_map_index = ti.rendered_map_index
        self.pool = ti.pool

    def __repr__(self) -> str:
        return f"<TI {self.task_id}[{self.map_index}] {self.state} try {self.try_number}>"


def task_state_rows(dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Everything the tasks of one run kept in ``task_state_store`` (none before Airflow 3.3)."""
    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:
        return []
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == dag_id, TaskStateStoreModel.run_id == run_id
            )
        ).all()
        return [
            {"task_id": r.task_id, "map_index": r.map_index, "key": r.key, "value": r.value} for r in rows
        ]


def posts(emulator: Any, marker: str | None = None) -> list[Any]:
    """The generation POSTs the emulator received, optionally only those whose prompt has ``marker``."""
    return [
        r
        for r in emulator.requests
        if r.method == "POST"
        and r.path.endswith("/generation")
        and (marker is None or marker in str((r.json or {}).get("prompt", "")))
    ]


def failure_events(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The failure/retry callbacks' records, per task, in order."""
    events: dict[str, list[dict[str, Any]]] = {}
    path = out / "events.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            event = json.loads(line)
            events.setdefault(event["task_id"], []).append(event)
    return events
