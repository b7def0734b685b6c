"""KlingBatchTrigger on its own against the emulator: one event, small, ids only."""

from __future__ import annotations

import json
import time

from airflow_provider_kling.triggers.kling import KlingBatchTrigger


def _submit(emulator, prompts):
    from airflow_provider_kling.hooks.kling import KlingHook

    with KlingHook() as hook:
        return [
            hook.submit(
                {
                    "model": "kling-video/v1/standard/image-to-video",
                    "image_url": "https://x.org/a.png",
                    "prompt": p,
                }
            ).id
            for p in prompts
        ]


async def _events(trigger):
    return [event async for event in trigger.run()]


async def test_reports_once_enough_have_ended_and_keeps_the_rest_pending(emulator):
    ids = _submit(
        emulator, ["fast [seconds:0.2]", "fast too [seconds:0.2]", "slow [seconds:30]", "bad [error]"]
    )
    pending = [[f"k{i}", gid, "legacy"] for i, gid in enumerate(ids)]
    trigger = KlingBatchTrigger(pending, poll_interval=0.1, end_time=time.time() + 20, min_finished=3)
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith("KlingBatchTrigger")
    assert KlingBatchTrigger(**kwargs).serialize() == (classpath, kwargs)
    (event,) = await _events(trigger)
    payload = event.payload
    assert payload["status"] == "success"
    assert payload["finished"]["k0"] == ["completed", None]
    assert payload["finished"]["k1"] == ["completed", None]
    assert payload["finished"]["k3"][0] == "failed"
    assert "k2" not in payload["finished"]
    assert "http" not in json.dumps(payload)  # no video URL in the event


async def test_polls_every_pending_id_each_round_through_faults_until_the_deadline(emulator):
    ids = _submit(emulator, ["slow a [seconds:30]", "slow b [seconds:30]"])
    emulator.set_fault_rate(0.5, kinds=["500", "502"])
    trigger = KlingBatchTrigger(
        [["a", ids[0], ""], ["b", ids[1], ""]], poll_interval=0.2, end_time=time.time() + 2
    )
    (event,) = await _events(trigger)
    assert event.payload["status"] == "timeout"
    assert event.payload["finished"] == {}
