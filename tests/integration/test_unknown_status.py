"""A status word the provider does not know yet (``rendering``) means pending, never failed.

The service adds status words over time; a new one in the middle of a generation's life must keep the
hook, the trigger and the sensor waiting until ``completed``. The emulator's scripted answers send the
word over real sockets: ``rendering`` first, then ``completed``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_kling.models import GenerationStatus
from tests.support.hooks import make_hook

GEN_ID = "3f2a9c1e-5d4b-4c1a-9e8f-0b1c2d3e4f50:kling-video/v1/standard/image-to-video"
NEW_WORDS = ["rendering", "Upscaling", "post_processing"]


def script_new_word_then_completed(emulator: Any, word: str) -> str:
    """The next poll answers ``word``, every later one ``completed`` with a video."""
    url = f"{emulator.base_url}/_emulator/blob/1000"
    emulator.script(method="GET", body={"id": GEN_ID, "status": word})
    emulator.script(
        method="GET",
        times=None,
        body={"id": GEN_ID, "status": "completed", "video": {"url": url, "file_size": 1000}},
    )
    return url


@pytest.mark.parametrize("word", NEW_WORDS)
def test_get_generation_reads_a_new_word_as_pending(emulator: Any, word: str) -> None:
    script_new_word_then_completed(emulator, word)
    hook = make_hook()

    first = hook.get_generation(GEN_ID)
    assert (first.status, first.raw_status, first.is_terminal) == (GenerationStatus.PENDING, word, False)
    assert first.error is None
    second = hook.get_generation(GEN_ID)
    assert second.status is GenerationStatus.COMPLETED


@pytest.mark.parametrize("word", NEW_WORDS)
def test_wait_for_generation_waits_through_a_new_word(emulator: Any, word: str) -> None:
    url = script_new_word_then_completed(emulator, word)

    generation = make_hook().wait_for_generation(GEN_ID, poll_interval=0.05, timeout=30)

    assert generation.status is GenerationStatus.COMPLETED
    assert generation.video_url == url
    assert emulator.count("GET") == 2  # the new word, then completed


@pytest.mark.parametrize("word", NEW_WORDS)
def test_the_trigger_waits_through_a_new_word(emulator: Any, word: str) -> None:
    from airflow_provider_kling.triggers.kling import KlingGenerationTrigger, KlingTriggerEvent

    script_new_word_then_completed(emulator, word)
    trigger = KlingGenerationTrigger(GEN_ID, poll_interval=0.05, end_time=time.time() + 30)

    async def run() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (payload,) = asyncio.run(run())
    event = KlingTriggerEvent.model_validate(payload)
    assert event.status == "success", payload
    assert event.generation is not None
    assert event.generation.status is GenerationStatus.COMPLETED
    assert emulator.count("GET") == 2


class _TI:
    """The one thing a sensor's poke uses of its task instance: pushing XComs."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.mark.parametrize("word", NEW_WORDS)
def test_the_sensor_keeps_poking_through_a_new_word(emulator: Any, word: str) -> None:
    from airflow_provider_kling.sensors.kling import KlingGenerationSensor

    url = script_new_word_then_completed(emulator, word)
    sensor = KlingGenerationSensor(task_id="wait", generation_id=GEN_ID, poke_interval=0.05)
    ti = _TI()
    context: Any = {"ti": ti}

    first = sensor.poke(context)
    assert first.is_done is False
    assert ti.pushed == {}
    second = sensor.poke(context)
    assert second.is_done is True
    assert second.xcom_value["status"] == "completed"
    assert second.xcom_value["raw_status"] == "completed"
    assert ti.pushed["kling_video_url"] == url
