"""Crash safety in a real deployment: a paid generation is submitted once, whatever dies meanwhile.

(a) the task process is SIGKILLed after its POST, before it defers: the retry reconnects through
    ``task_state_store``; (b) the triggerer is stopped while it polls and started again: the trigger
    resumes from its serialized kwargs; (c) the task is cleared while its generation runs: the new
    try reconnects. Each ends with exactly one POST at the emulator.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.batch import E2E_ROWS, e2e_batch, kill_first_try_while_submitting, read_results
from tests.support.deployment import Deployment, deployment_fixture, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.airflow3]

DAG_KILLED = "deploy_kling_killed"
DAG_DEFERRABLE = "deploy_kling_deferrable"


def _processes_with_cmdline(prefix: str) -> dict[int, str]:
    """Live processes whose command line (as ``ps`` shows it) starts with ``prefix``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # the process ended meanwhile
            continue
        if cmdline.startswith(prefix):
            found[int(entry.name)] = cmdline
    return found


def _state_store(deployment: Deployment, dag_id: str, run_id: str, task_id: str) -> dict[str, object]:
    body = deployment.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/state-store")
    return {entry["key"]: entry["value"] for entry in body["task_state_store"]}


def _only_generation(deployment: Deployment, run_id: str) -> str:
    generations = deployment.generations_for(run_id)
    assert len(generations) == 1, generations
    return str(generations[0]["id"])


def test_task_killed_after_post_reconnects_on_retry(deployment: Deployment) -> None:
    run_id = deployment.trigger(DAG_KILLED)
    marker = deployment.markers / f"{run_id}.submitted"
    wait_for("the task to submit and pause", marker.exists, timeout=240, on_fail=deployment.log_tails)
    submitted = json.loads(marker.read_text())
    ti = deployment.task_instance(DAG_KILLED, run_id, "generate")
    assert ti["state"] == "running"
    # The task runner names itself after its task instance id.
    task_processes = _processes_with_cmdline(f"airflow worker -- {ti['id']}")
    assert submitted["pid"] in task_processes, (submitted, task_processes)
    assert deployment.posts_for(run_id) == 1
    # The id is stored with the request's hash, its endpoint and when it was submitted.
    (stored,) = _state_store(deployment, DAG_KILLED, run_id, "generate").values()
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored["id"] == submitted["generation_id"]
    assert stored["api"] == "legacy"
    assert len(stored["request"]) == 32

    os.kill(submitted["pid"], signal.SIGKILL)

    watch = deployment.watch_run(DAG_KILLED, run_id)
    assert watch.final_state == "success", deployment.describe_run(DAG_KILLED, run_id)
    tries = deployment.tries(DAG_KILLED, run_id, "generate")
    assert [t["try_number"] for t in tries] == [1, 2]
    assert tries[0]["state"] in ("failed", "up_for_retry"), tries[0]
    assert tries[1]["state"] == "success"
    assert "deferred" in watch.states[("generate", -1)]
    retry_log = deployment.task_log(DAG_KILLED, run_id, "generate", 2)
    assert f"Reconnecting to Kling generation {submitted['generation_id']}" in retry_log
    # One paid POST in all: the retry found the generation instead of submitting again.
    assert deployment.posts_for(run_id) == 1
    assert _only_generation(deployment, run_id) == submitted["generation_id"]
    result = deployment.xcoms(DAG_KILLED, run_id, "generate")["return_value"]
    assert result["generation_id"] == submitted["generation_id"]
    assert result["status"] == "completed"


def test_triggerer_restarted_mid_poll_resumes_the_trigger(deployment: Deployment) -> None:
    run_id = deployment.trigger(DAG_DEFERRABLE)
    deployment.wait_ti_state(DAG_DEFERRABLE, run_id, "generate", "deferred")
    generation_id = wait_for("the POST", lambda: deployment.generations_for(run_id), timeout=60)[0]["id"]
    wait_for("the triggerer's first poll", lambda: deployment.polls_for(generation_id), timeout=120)
    old_jobs = {j["id"] for j in deployment.api("GET", "/jobs", params={"job_type": "TriggererJob"})["jobs"]}

    deployment.stop_component("triggerer")
    stopped_at = time.time()
    # The stop neither failed the task nor let the trigger finish: the generation was still pending.
    ti = deployment.task_instance(DAG_DEFERRABLE, run_id, "generate")
    assert ti["state"] == "deferred"
    generation = deployment.emulator("GET", "/generations")[generation_id]
    assert deployment.polls_for(generation_id)  # the old triggerer did poll before it stopped

    deployment.start_component("triggerer")
    deployment.wait_healthy()
    watch = deployment.watch_run(DAG_DEFERRABLE, run_id)
    assert watch.final_state == "success", deployment.describe_run(DAG_DEFERRABLE, run_id)

    # The new triggerer process took the trigger over from its serialized kwargs and polled on.
    new_jobs = {
        j["id"] for j in deployment.api("GET", "/jobs", params={"job_type": "TriggererJob"})["jobs"]
    } - old_jobs
    assert new_jobs
    polls_after = [p for p in deployment.polls_for(generation_id) if p["time"] > stopped_at]
    assert polls_after
    folder = deployment.task_logs / f"dag_id={DAG_DEFERRABLE}" / f"run_id={run_id}" / "task_id=generate"
    logs = {int(p.name.rsplit(".", 2)[-2]): p.read_text() for p in folder.glob("attempt=1.log.trigger.*.log")}
    resumed = [text for job, text in logs.items() if job in new_jobs]
    assert resumed, logs.keys()
    assert f"Kling generation {generation_id} is completed" in resumed[0]
    assert not any("is completed" in text for job, text in logs.items() if job in old_jobs)
    # Same try throughout: the task was never run again, and one POST was made.
    assert [(t["try_number"], t["state"]) for t in deployment.tries(DAG_DEFERRABLE, run_id, "generate")] == [
        (1, "success")
    ]
    assert deployment.posts_for(run_id) == 1
    assert generation["id"] == _only_generation(deployment, run_id)


def test_task_cleared_while_generating_reconnects(deployment: Deployment) -> None:
    run_id = deployment.trigger(DAG_DEFERRABLE)
    deployment.wait_ti_state(DAG_DEFERRABLE, run_id, "generate", "deferred")
    generation_id = _only_generation(deployment, run_id)

    cleared = deployment.api(
        "POST",
        f"/dags/{DAG_DEFERRABLE}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ["generate"],
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )
    assert [ti["task_id"] for ti in cleared["task_instances"]] == ["generate"]

    watch = deployment.watch_run(DAG_DEFERRABLE, run_id)
    assert watch.final_state == "success", deployment.describe_run(DAG_DEFERRABLE, run_id)
    tries = deployment.tries(DAG_DEFERRABLE, run_id, "generate")
    assert [t["try_number"] for t in tries] == [1, 2]
    assert tries[1]["state"] == "success"
    second = deployment.task_log(DAG_DEFERRABLE, run_id, "generate", 2)
    assert f"Reconnecting to Kling generation {generation_id}" in second
    assert deployment.posts_for(run_id) == 1
    assert (
        deployment.xcoms(DAG_DEFERRABLE, run_id, "generate")["return_value"]["generation_id"] == generation_id
    )


@pytest.mark.slow
def test_batch_killed_mid_submit_ends_with_every_generation_once(deployment: Deployment) -> None:
    """SIGKILL of a 2,000-row batch while it submits, with ``/v2/logs`` offered (rows lag 5 s).

    The rows whose POSTs were in flight at the kill are looked up by their client request ids: those
    the service took are reconnected to, those it never received are sent again after the
    connection's bound. The batch ends with exactly one generation per row and no ``unknown`` row.
    (Without the route, today's report: tests/integration/test_batch.py's SIGKILL case.)
    """
    from collections import Counter

    tag = "e2e-logs-kill"  # not containing another test's tag: the deployment is shared
    pid_file = deployment.home / "markers" / f"{tag}.pid"
    deployment.emulator("POST", "/account", json={"logs_delay": 5, "disabled": []})
    try:
        run_id, _rows, out = e2e_batch(deployment, tag, pid_file=str(pid_file), fail_on_partial=True)
        kill_first_try_while_submitting(deployment, tag, pid_file)
        killed_at = deployment.posts_for(tag)
        watch = deployment.watch_run("kling_batch", run_id, timeout=900)
    finally:
        deployment.emulator("POST", "/account", json={"logs_delay": 0})
    assert watch.final_state == "success", deployment.describe_run("kling_batch", run_id)
    gens = deployment.generations_for(tag)
    assert len(gens) == E2E_ROWS, f"{len(gens)} generations for {E2E_ROWS} rows"
    assert len({g["prompt"] for g in gens}) == E2E_ROWS  # no row paid twice
    lines = read_results(out / "results.jsonl")
    status = Counter(line["status"] for line in lines)
    assert status == {"completed": E2E_ROWS}, status
    assert len({line["client_request_id"] for line in lines}) == E2E_ROWS
    summary = deployment.xcoms("kling_batch", run_id, "batch")["return_value"]
    assert (summary["completed"], summary["unknown"]) == (E2E_ROWS, 0)
    retry_log = "\n".join(
        deployment.task_log("kling_batch", run_id, "batch", t["try_number"])
        for t in deployment.tries("kling_batch", run_id, "batch")[1:]
    )
    found = [_event(line) for line in retry_log.splitlines() if "found at their generation" in line]
    assert found, retry_log[-3000:]
    print(
        f"SIGKILL mid-batch with /v2/logs (5 s delay): killed after {killed_at} POSTs; "
        f"{deployment.posts_for(tag)} POSTs and {len(gens)} generations for {E2E_ROWS} rows, {status}; "
        f"{len(found)} look(s); " + "; ".join(f for f in found if not f.startswith("/v2/logs: 0 row(s)"))
    )


def _event(line: str) -> str:
    """The message of one task log line (JSON lines, or plain text)."""
    try:
        return str(json.loads(line).get("event", line))
    except (ValueError, AttributeError):
        return line.strip()
