"""The API key leaves no trace in a real deployment.

One run exercises every path that talks to the service (deferrable, in the worker, submit + sensor,
a refused key, transient 429/503 answers retried). Then the test searches, for both recognisable
keys (the accepted one and the refused one): every file under AIRFLOW_HOME (task logs, trigger
logs, each process's output, the SQLite metadata DB byte for byte), every XCom, rendered template
field and task log the REST API serves, and the trigger rows (decrypted) seen while tasks were
deferred. Each search also finds something that must be there, so an empty search cannot pass.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.support.deployment import Deployment, deployment_fixture, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.airflow3]

DAG_ID = "deploy_kling_secrets"


def _trigger_rows(deployment: Deployment) -> dict[int, tuple[str, str]]:
    """The trigger table now: id -> (classpath, decrypted kwargs as stored)."""
    db = sqlite3.connect(f"file:{deployment.home / 'airflow.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT id, classpath, kwargs FROM trigger").fetchall()
    finally:
        db.close()
    fernet = Fernet(deployment.fernet_key.encode())
    out = {}
    for trigger_id, classpath, kwargs in rows:
        # Stored either as plain JSON or as a Fernet token, as Airflow's Trigger model reads them.
        text = kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()).decode()
        out[trigger_id] = (classpath, text)
    return out


@pytest.fixture(scope="module")
def secrets_run(deployment: Deployment) -> dict[str, Any]:
    """Run deploy_kling_secrets with transient faults; record trigger rows while tasks are deferred."""
    deployment.emulator(
        "POST", "/faults", json={"kind": "429", "times": 1, "method": "POST", "retry_after": 1}
    )
    deployment.emulator("POST", "/faults", json={"kind": "503", "times": 2, "method": "GET"})
    run_id = deployment.trigger(DAG_ID)
    triggers: dict[int, tuple[str, str]] = {}
    live: list[dict[str, Any]] = []

    def finished() -> str | None:
        triggers.update(_trigger_rows(deployment))
        for ti in deployment.task_instances(DAG_ID, run_id).values():
            if ti["state"] == "deferred" and ti.get("trigger"):
                live.append(ti["trigger"])
        state = deployment.run(DAG_ID, run_id)["state"]
        return state if state in ("success", "failed") else None

    state = wait_for(
        "the secrets run",
        finished,
        timeout=300,
        interval=0.3,
        on_fail=lambda: deployment.describe_run(DAG_ID, run_id),
    )
    faults = deployment.emulator("GET", "/faults")["counts"]
    return {"run_id": run_id, "state": state, "triggers": triggers, "live": live, "faults": faults}


def test_run_took_every_path(deployment: Deployment, secrets_run: dict[str, Any]) -> None:
    tis = deployment.task_instances(DAG_ID, secrets_run["run_id"])
    states = {task_id: ti["state"] for task_id, ti in tis.items()}
    assert states == {
        "generate": "success",
        "generate_in_worker": "success",
        "submit_only": "success",
        "wait_with_sensor": "success",
        "refused": "failed",
    }
    assert secrets_run["state"] == "failed"
    assert secrets_run["faults"] == {"429": 1, "503": 2}
    refused_log = deployment.task_log(DAG_ID, secrets_run["run_id"], "refused", 1)
    assert "401" in refused_log or "refused" in refused_log.lower()


def test_trigger_rows_hold_no_key(deployment: Deployment, secrets_run: dict[str, Any]) -> None:
    triggers = secrets_run["triggers"]
    # Both deferrable tasks were seen deferred with their trigger row: the search is not empty.
    ids = {
        deployment.xcoms(DAG_ID, secrets_run["run_id"], task)["generation_id"]
        for task in ("generate", "submit_only")
    }
    found = {gid for gid in ids if any(gid in kwargs for _, kwargs in triggers.values())}
    assert found == ids, (ids, triggers)
    for classpath, kwargs in triggers.values():
        assert classpath.startswith("airflow_provider_kling.triggers.")
        assert "kling_default" in kwargs
        for key in (deployment.api_key, deployment.refused_key):
            assert key not in kwargs
            assert key not in classpath
    assert secrets_run["live"]
    assert deployment.api_key not in json.dumps(secrets_run["live"])


def _all_task_instances(deployment: Deployment) -> list[dict[str, Any]]:
    body = deployment.api("GET", "/dags/~/dagRuns/~/taskInstances", params={"limit": 1000})
    assert body["total_entries"] == len(body["task_instances"])
    return list(body["task_instances"])


def test_no_key_in_xcoms_rendered_fields_or_logs_through_the_api(
    deployment: Deployment, secrets_run: dict[str, Any]
) -> None:
    keys = (deployment.api_key, deployment.refused_key)
    tis = _all_task_instances(deployment)
    # Every task instance of the deployment so far (other e2e tests' runs too, when they ran first).
    assert {ti["task_id"] for ti in tis if ti["dag_run_id"] == secrets_run["run_id"]} >= {
        "generate",
        "refused",
    }
    rendered = json.dumps([ti["rendered_fields"] for ti in tis])
    assert secrets_run["run_id"] in rendered  # the templated prompt was rendered
    xcom_values = []
    entries = deployment.api("GET", "/dags/~/dagRuns/~/taskInstances/~/xcomEntries", params={"limit": 1000})
    for entry in entries["xcom_entries"]:
        path = f"/dags/{entry['dag_id']}/dagRuns/{entry['run_id']}/taskInstances/{entry['task_id']}"
        value = deployment.api(
            "GET", f"{path}/xcomEntries/{entry['key']}", params={"map_index": entry["map_index"]}
        )
        xcom_values.append(json.dumps(value))
    xcoms = "\n".join(xcom_values)
    assert "kling_video_url" in xcoms
    assert "generation_id" in xcoms
    logs = []
    for ti in tis:
        for try_number in range(1, int(ti["try_number"]) + 1):
            logs.append(
                deployment.task_log(
                    ti["dag_id"], ti["dag_run_id"], ti["task_id"], try_number, ti["map_index"]
                )
            )
    log_text = "\n".join(logs)
    assert "Kling generation" in log_text
    assert "Trigger fired event" in log_text
    for key in keys:
        assert key not in rendered
        assert key not in xcoms
        assert key not in log_text


def test_no_key_in_any_file_of_the_deployment(deployment: Deployment, secrets_run: dict[str, Any]) -> None:
    """Task and trigger logs, process output and the metadata DB (raw bytes, so every table)."""
    time.sleep(1)  # let the processes flush the lines about the run's end
    keys = [k.encode() for k in (deployment.api_key, deployment.refused_key)]
    generation_id = deployment.xcoms(DAG_ID, secrets_run["run_id"], "generate")["generation_id"].encode()
    searched: list[Path] = []
    holding_generation_id = []
    for path in sorted(p for p in deployment.home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        searched.append(path)
        for key in keys:
            assert key not in data, f"the API key leaked into {path}"
        if generation_id in data:
            holding_generation_id.append(path.relative_to(deployment.home).as_posix())
    names = {p.name for p in searched}
    assert {"airflow.db", "triggerer.log", "scheduler.log", "api-server.log", "dag-processor.log"} <= names
    # The search reads what it should: the generation id is in a task log and a trigger log...
    assert any(p.endswith("attempt=1.log") and "task_id=generate" in p for p in holding_generation_id)
    assert any(".log.trigger." in p for p in holding_generation_id)
    # ...and in the metadata DB, whose every table is also searched as SQL text (pages still in the WAL too).
    db = sqlite3.connect(f"file:{deployment.home / 'airflow.db'}?mode=ro", uri=True, timeout=10)
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert generation_id.decode() in dump
    assert secrets_run["run_id"] in dump
    for key in (deployment.api_key, deployment.refused_key):
        assert key not in dump
