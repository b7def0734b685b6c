"""A user stopping a deferred task: the triggers say what goes on and is billed (Airflow 3.3+ ``on_kill``).

The trigger runs inside Airflow's own ``TriggerRunner.run_trigger`` in this process, against the
emulator, and is cancelled the way a mark-failed / mark-success / clear cancels it; Airflow then
calls ``on_kill``. No route cancels a generation, so the generation must go on untouched and
reachable, and the log must name it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.triggers.kling import KlingBatchTrigger, KlingGenerationTrigger
from tests.support.hooks import MODEL, REQUEST

pytestmark = pytest.mark.airflow33


async def _run_and_kill(trigger: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``trigger`` in Airflow's trigger runner until it has polled, then cancel it as a user does."""
    from airflow.jobs import triggerer_job_runner as runner_module

    monkeypatch.setenv("AIRFLOW_DISABLE_GREENBACK_PORTAL", "true")
    runner = runner_module.TriggerRunner()
    runner.triggers = {1: {"name": "kling", "events": 0, "task": None, "is_watcher": False}}
    trigger.task_instance = None
    task = asyncio.create_task(runner.run_trigger(1, trigger))
    runner.triggers[1]["task"] = task
    while not any(r.method == "GET" for r in emulator.requests):
        await asyncio.sleep(0.02)
    task.cancel(runner_module._USER_ACTION_CANCEL_MSG)
    with pytest.raises(asyncio.CancelledError):
        await task


def _warnings(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for event in events:
        args = event.get("positional_args")
        if event.get("log_level") == "warning":
            out.append(event["event"] % args if args else str(event["event"]))
    return out


def test_a_killed_generation_trigger_names_what_goes_on_and_is_billed(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # [seconds:600]: the generation stays pending until the test completes it, whatever the load.
    generation_id = KlingHook().submit_generation({**REQUEST, "prompt": "a long one [seconds:600]"})
    trigger = KlingGenerationTrigger(generation_id=generation_id, poll_interval=0.05, model=MODEL)
    with structlog.testing.capture_logs() as events:
        asyncio.run(_run_and_kill(trigger, emulator, monkeypatch))

    (warning,) = [w for w in _warnings(events) if "stopped by a user" in w]
    assert generation_id in warning
    assert MODEL in warning
    assert "goes on at the service and is billed" in warning
    assert "clearing the task reconnects to it" in warning
    # Nothing was cancelled or sent: the generation goes on and a later try finds it.
    assert emulator.count("POST") == 1
    emulator.complete(generation_id)
    assert KlingHook().get_generation(generation_id).status.value == "completed"


def test_a_killed_batch_trigger_names_every_generation_in_flight(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [KlingHook().submit_generation({**REQUEST, "prompt": f"row {n} [seconds:600]"}) for n in range(3)]
    trigger = KlingBatchTrigger(pending=[[f"k{n}", gid, ""] for n, gid in enumerate(ids)], poll_interval=0.05)
    with structlog.testing.capture_logs() as events:
        asyncio.run(_run_and_kill(trigger, emulator, monkeypatch))

    (warning,) = [w for w in _warnings(events) if "stopped by a user" in w]
    assert "3 generation(s) in flight go on at the service and are billed" in warning
    for n, gid in enumerate(ids):
        assert f"k{n}={gid}" in warning
    assert emulator.count("POST") == 3
