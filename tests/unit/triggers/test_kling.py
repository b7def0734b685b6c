"""KlingGenerationTrigger run on an event loop against the emulator, as the triggerer runs it."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import time
from typing import Any

import pytest

from airflow_provider_kling.hooks._transport import shared_session_in_use
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.triggers.kling import KlingGenerationTrigger, KlingTriggerEvent
from tests.support.connections import API_KEY, connection_json, set_connection

CLASSPATH = "airflow_provider_kling.triggers.kling.KlingGenerationTrigger"
#: Fast backoff, so transient-fault tests take milliseconds per retry.
FAST = {"poll_interval": 0.05, "retry_min_wait": 0.01, "retry_max_wait": 0.05}


def submit(prompt: str) -> str:
    """Start a generation on the emulator through the hook, as the operator does."""
    return KlingHook().submit_generation(
        {
            "model": "kling-video/v1/standard/image-to-video",
            "image_url": "https://images.example.org/lake.jpg",
            "prompt": prompt,
        }
    )


async def all_events(trigger: KlingGenerationTrigger) -> list[dict[str, Any]]:
    """Every event the trigger yields until its generator ends (the triggerer takes the first)."""
    return [event.payload async for event in trigger.run()]


def polls(emulator: Any, generation_id: str) -> int:
    return sum(
        1 for r in emulator.requests if r.method == "GET" and r.query.get("generation_id") == generation_id
    )


@pytest.fixture
def loop_errors() -> list[dict[str, Any]]:
    """What the running loop's exception handler received (aiohttp reports unclosed sessions there)."""
    return []


def watch_loop(errors: list[dict[str, Any]]) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))


def assert_no_unclosed(errors: list[dict[str, Any]]) -> None:
    gc.collect()
    assert not [e for e in errors if "Unclosed" in str(e.get("message"))], errors


@pytest.mark.airflow3  # Airflow 3's serde, as dag.test and the triggerer use it
def test_serialize_round_trips_every_argument_and_holds_no_secret():
    try:
        from airflow.sdk._shared.module_loading import import_string
    except ImportError:  # before Airflow 3.2
        from airflow.utils.module_loading import import_string
    try:
        from airflow.sdk.serde import deserialize, serialize
    except ImportError:  # before Airflow 3.2
        from airflow.serialization.serde import deserialize, serialize

    deadline = time.time() + 90
    trigger = KlingGenerationTrigger(
        generation_id="2b9c1c5e-7f0a-4b8e-9d57-0c1f3f1a9e11:kling-video/v1/standard/image-to-video",
        kling_conn_id="kling_other",
        poll_interval=3,
        end_time=deadline,
        max_attempts=4,
        timeout=(2, 30),
        retry_min_wait=0.5,
        retry_max_wait=20,
        api="unified",
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    # Every constructor argument is serialized, as the kind the triggerer can store.
    params = set(inspect.signature(KlingGenerationTrigger.__init__).parameters) - {"self"}
    assert set(kwargs) == params
    assert kwargs["end_time"] == deadline
    assert isinstance(kwargs["end_time"], float)
    # Through JSON and Airflow's serde (what dag.test and the triggerer do), and back.
    for stored in (json.loads(json.dumps(kwargs)), deserialize(serialize(kwargs))):
        clone = import_string(classpath)(**stored)
        assert clone.serialize() == (classpath, kwargs)
    # Only the connection id travels: the key is looked up again where the trigger runs.
    assert "kling_other" in json.dumps(kwargs)
    assert not {"password", "api_key", "key", "headers"} & set(kwargs)


def test_default_deadline_is_an_epoch_float():
    before = time.time()
    _, kwargs = KlingGenerationTrigger(generation_id="gen_1").serialize()
    assert isinstance(kwargs["end_time"], float)
    assert before + 1800 <= kwargs["end_time"] <= time.time() + 1800


async def test_one_success_event(emulator, loop_errors):
    watch_loop(loop_errors)
    gen_id = submit("trigger success: swans glide across the lake [seconds:600]")
    task = asyncio.create_task(
        all_events(KlingGenerationTrigger(gen_id, poll_interval=0.1, end_time=time.time() + 60))
    )
    while polls(emulator, gen_id) < 2:  # pending, and pending again: it keeps polling
        await asyncio.sleep(0.02)
    emulator.complete(gen_id)
    events = await task

    (payload,) = events
    event = KlingTriggerEvent.model_validate(payload)
    assert (event.status, event.generation_id) == ("success", gen_id)
    assert event.generation is not None
    assert event.generation.video_url is not None
    assert event.generation.video_url.startswith(emulator.base_url)
    assert event.generation.file_size == len(emulator.video_data(gen_id))
    assert polls(emulator, gen_id) >= 3  # pending twice, then completed
    assert API_KEY not in json.dumps(payload)
    assert_no_unclosed(loop_errors)


async def test_a_sleeping_trigger_keeps_nothing_of_its_last_poll(emulator, loop_errors):
    """A thousand triggers each holding its last answer across every sleep feed the collector's
    oldest generation, and full collections over the triggerer's heap stall every trigger."""
    watch_loop(loop_errors)
    gen_id = submit("trigger sleep: a heron waits in the reeds [seconds:600]")
    trigger = KlingGenerationTrigger(gen_id, poll_interval=60, end_time=time.time() + 120)
    run = trigger.run()
    task = asyncio.create_task(run.__anext__())
    # Its first poll answered, the trigger sleeps until the next one.
    while not (inspect.iscoroutine(run.ag_await) and run.ag_await.__name__ == "sleep"):
        assert not task.done()
        await asyncio.sleep(0.01)
    assert polls(emulator, gen_id) == 1
    assert "generation" not in run.ag_frame.f_locals
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await run.aclose()
    assert_no_unclosed(loop_errors)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("[error]", "image_url: Could not detect face in the image"),
        ("[error:2026]", "ContentPolicyViolation: The prompt was rejected by the content policy"),
    ],
)
async def test_one_error_event_with_the_services_message(emulator, marker, message):
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_kling.operators.kling import generation_from_event

    gen_id = submit(f"trigger error: {marker}")
    events = await all_events(KlingGenerationTrigger(gen_id, poll_interval=0.1, end_time=time.time() + 30))

    (payload,) = events
    assert payload["status"] == "error"
    assert payload["message"] == message
    assert payload["retryable"] is False
    # The task resumes into a failure that skips retries, naming the generation and the reason.
    with pytest.raises(AirflowFailException, match=message) as failure:
        generation_from_event(payload, 30)
    assert gen_id in str(failure.value)


async def test_one_timeout_event_at_the_deadline(emulator):
    from airflow_provider_kling.exceptions import KlingGenerationTimeout
    from airflow_provider_kling.operators.kling import generation_from_event

    gen_id = submit("trigger timeout: the tide rises [seconds:600]")
    events = await all_events(KlingGenerationTrigger(gen_id, poll_interval=0.1, end_time=time.time() + 0.5))

    (payload,) = events
    assert payload["status"] == "timeout"
    assert payload["retryable"] is True
    assert payload["generation"]["status"] == "pending"
    # It polled, then the deadline ended the wait (the generation takes 10 minutes).
    assert polls(emulator, gen_id) >= 1
    with pytest.raises(KlingGenerationTimeout, match=gen_id):
        generation_from_event(payload, 0.5)


async def test_transient_errors_are_retried_inside(emulator, loop_errors):
    watch_loop(loop_errors)
    gen_id = submit("trigger transient: rain on the water")
    emulator.inject("503", method="GET", times=2)
    emulator.inject("reset", method="GET", times=1)
    emulator.inject("429", method="GET", times=1, retry_after=0)
    trigger = KlingGenerationTrigger(gen_id, end_time=time.time() + 30, max_attempts=5, **FAST)

    (payload,) = await all_events(trigger)
    assert payload["status"] == "success"
    assert emulator.fault_counts == {"503": 2, "reset": 1, "429": 1}
    assert_no_unclosed(loop_errors)


async def test_transient_errors_past_the_bound_end_in_one_retryable_error(emulator, loop_errors):
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_kling.exceptions import KlingError
    from airflow_provider_kling.operators.kling import generation_from_event

    watch_loop(loop_errors)
    gen_id = submit("trigger outage: fog over the lake")
    emulator.inject("502", method="GET", times=None)
    trigger = KlingGenerationTrigger(gen_id, end_time=time.time() + 30, max_attempts=3, **FAST)

    (payload,) = await all_events(trigger)
    assert payload["status"] == "error"
    assert payload["retryable"] is True
    assert "502" in payload["message"]
    assert polls(emulator, gen_id) == 3  # bounded: max_attempts polls, then the event
    # The task fails normally (Airflow's retries apply), naming the generation.
    with pytest.raises(KlingError, match=gen_id) as failure:
        generation_from_event(payload, 30)
    assert not isinstance(failure.value, AirflowFailException)
    assert_no_unclosed(loop_errors)


async def test_refused_key_ends_in_one_final_error(emulator):
    gen_id = submit("trigger refused: a boat at the dock")
    set_connection("kling_rotated", host=emulator.base_url, password="rotated-away-key")
    trigger = KlingGenerationTrigger(gen_id, "kling_rotated", end_time=time.time() + 30, **FAST)

    (payload,) = await all_events(trigger)
    assert payload["status"] == "error"
    assert payload["retryable"] is False
    assert "401" in payload["message"]
    assert polls(emulator, gen_id) == 1  # no retry of a refused key
    assert "rotated-away-key" not in json.dumps(payload)


async def test_triggers_on_one_loop_share_one_session_closed_by_the_last(emulator, loop_errors):
    watch_loop(loop_errors)
    # Generations that only end when the test says so (the emulator's control API).
    ids = [submit(f"trigger shared {i}: reeds sway [seconds:600]") for i in range(4)]
    tasks = [
        asyncio.create_task(
            all_events(KlingGenerationTrigger(g, poll_interval=0.1, end_time=time.time() + 60))
        )
        for g in ids
    ]
    while not all(polls(emulator, g) for g in ids):
        await asyncio.sleep(0.02)

    # All four hold the loop's one session for this connection.
    in_use = shared_session_in_use("kling_default")
    assert in_use is not None
    session, holders = in_use
    assert holders == 4
    assert not session.closed

    for g in ids[:3]:
        emulator.complete(g)
    done, _ = await asyncio.wait(tasks[:3])
    assert all(t.result()[0]["status"] == "success" for t in done)
    # The last trigger still polls through the same, still open session.
    assert (shared_session_in_use("kling_default") or (None,))[0] is session
    assert not session.closed

    emulator.complete(ids[3])
    (payload,) = await tasks[3]
    assert payload["status"] == "success"
    # The last one out closed it.
    assert session.closed
    assert shared_session_in_use("kling_default") is None
    assert_no_unclosed(loop_errors)


async def test_cancel_and_cleanup_touch_nothing_remote(emulator, loop_errors):
    watch_loop(loop_errors)
    gen_id = submit("trigger cancelled: ducks take off [seconds:600]")
    trigger = KlingGenerationTrigger(gen_id, poll_interval=0.1, end_time=time.time() + 600)
    task = asyncio.create_task(all_events(trigger))
    while polls(emulator, gen_id) < 2:
        await asyncio.sleep(0.02)
    in_use = shared_session_in_use("kling_default")
    assert in_use is not None
    session = in_use[0]
    before = len(emulator.requests)

    # What the triggerer does when the task is cleared, times out or the triggerer stops.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await trigger.cleanup()

    # No request was sent to cancel or change the generation: it goes on, and stays resumable.
    assert len(emulator.requests) == before
    assert [r.method for r in emulator.requests].count("POST") == 1
    emulator.complete(gen_id)
    assert KlingHook().get_generation(gen_id).video_url is not None
    # The shared session was closed on the way out.
    assert session.closed
    assert_no_unclosed(loop_errors)


async def test_polls_the_endpoint_the_generation_was_created_on(emulator, monkeypatch):
    # Created on the unified endpoint through a connection that says so; polled through kling_default
    # (legacy by default) with api="unified", as the operator defers it.
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLING_UNIFIED",
        connection_json(host=emulator.base_url, password=API_KEY, extra={"endpoint": "unified"}),
    )
    hook = KlingHook("kling_unified")
    gen_id = hook.submit_generation(
        {
            "model": "kling-video/v1/standard/image-to-video",
            "image_url": "https://images.example.org/lake.jpg",
            "prompt": "trigger api: a heron waits",
        }
    )
    emulator.complete(gen_id)
    trigger = KlingGenerationTrigger(gen_id, poll_interval=0.1, end_time=time.time() + 60, api="unified")
    assert trigger.serialize()[1]["api"] == "unified"

    (payload,) = await all_events(trigger)
    assert payload["status"] == "success"
    (post,) = [r for r in emulator.requests if r.method == "POST"]
    (poll,) = [r for r in emulator.requests if r.method == "GET" and r.query.get("generation_id") == gen_id]
    assert post.path == poll.path == "/v2/video/generations"


async def test_a_non_text_id_ends_in_one_event_not_an_exception(emulator):
    # A numeric Kling id rendered natively by a template arrives as an int. The first release built
    # its error event with that int and pydantic's ValidationError escaped run().
    trigger = KlingGenerationTrigger(789339022468063304, end_time=time.time() + 60)  # type: ignore[arg-type]
    (payload,) = await all_events(trigger)
    assert payload["status"] == "error"
    assert payload["generation_id"] == "789339022468063304"
    assert "generation_id" in payload["message"]
    assert emulator.requests == []
