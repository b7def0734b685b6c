"""Fault injection: 200 paid generations through a faulty network and service.

Half wait through the hook's synchronous loop (worker threads), half through
:class:`KlingGenerationTrigger` generators sharing one event loop, as in the triggerer. About 20% of
the emulator's answers are faulted. The suite proves that every logical submission creates exactly
one generation, that each ends in its true terminal state, and that no wait dies of a transient fault.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kling.emulator import API_PATH, KlingEmulator
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingConnectionError,
    KlingGenerationFailed,
    KlingServerError,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import Generation, GenerationStatus
from airflow_provider_kling.triggers.kling import KlingGenerationTrigger, KlingTriggerEvent
from tests.support.connections import API_KEY, set_connection

if TYPE_CHECKING:
    from collections.abc import Iterator

CONN_ID = "kling_faults"
GENERATIONS = 200
FAULT_RATE = 0.2
SEED = 20260
GENERATION_SECONDS = 1.5
POLL_INTERVAL = 0.2
#: Short read timeout so "slow" answers (1 s) time out on the client, as a stalled service would.
WAIT_TIMEOUT = (2.0, 0.5)
#: Submissions get no slow faults; a generous read timeout keeps a busy machine from faking one.
SUBMIT_TIMEOUT = (2.0, 10.0)
RETRY = {"retry_min_wait": 0.05, "retry_max_wait": 0.5}
MAX_ATTEMPTS = 10
DEADLINE = 90.0
MODEL = "kling-video/v1/standard/image-to-video"

#: Faults on polls: every kind the network or service can throw at a GET.
GET_FAULTS: list[dict[str, Any]] = [
    {"kind": "429"},
    {"kind": "429", "retry_after": 0.2},
    {"kind": "500"},
    {"kind": "502"},
    {"kind": "503"},
    {"kind": "504"},
    {"kind": "reset"},
    {"kind": "reset_mid"},
    {"kind": "truncated"},
    {"kind": "non_json"},
    {"kind": "slow", "delay": 1.0},
]
#: Faults on submissions: only those that surely created nothing, which the hook may retry.
POST_FAULTS: list[dict[str, Any]] = [
    {"kind": "429"},
    {"kind": "429", "retry_after": 0.1},
    {"kind": "503"},
]


def _prompt(i: int) -> str:
    # Both halves get both error shapes and plain successes.
    if i % 10 == 3:
        return f"clip {i} [error]"
    if i % 10 == 7:
        return f"clip {i} [error:2026]"
    return f"clip {i}: a cat turns its head"


def _request(i: int) -> dict[str, Any]:
    return {"model": MODEL, "image_url": f"https://example.com/cat-{i}.png", "prompt": _prompt(i)}


@pytest.fixture(scope="module")
def faulty_emulator() -> Iterator[KlingEmulator]:
    with KlingEmulator(api_key=API_KEY, generation_seconds=GENERATION_SECONDS) as emu:
        set_connection(CONN_ID, host=emu.base_url, password=API_KEY)
        yield emu


def _submit(i: int) -> str:
    hook = KlingHook(CONN_ID, timeout=SUBMIT_TIMEOUT, max_attempts=MAX_ATTEMPTS, **RETRY)
    return hook.submit_generation(_request(i))


def _sync_generation(i: int) -> tuple[str, Generation | KlingGenerationFailed]:
    """Submit, then wait in this thread like an operator in a worker slot."""
    generation_id = _submit(i)
    hook = KlingHook(CONN_ID, timeout=WAIT_TIMEOUT, max_attempts=MAX_ATTEMPTS, **RETRY)
    try:
        return generation_id, hook.wait_for_generation(generation_id, POLL_INTERVAL, DEADLINE)
    except KlingGenerationFailed as exc:
        return generation_id, exc


def _trigger(generation_id: str, max_attempts: int = MAX_ATTEMPTS) -> KlingGenerationTrigger:
    """The trigger as the operator defers to it, with this module's bounds and retry settings."""
    return KlingGenerationTrigger(
        generation_id=generation_id,
        kling_conn_id=CONN_ID,
        poll_interval=POLL_INTERVAL,
        end_time=time.time() + DEADLINE,
        max_attempts=max_attempts,
        timeout=WAIT_TIMEOUT,
        **RETRY,
    )


async def _drive_trigger(trigger: KlingGenerationTrigger) -> list[dict[str, Any]]:
    """Consume the trigger's generator as the triggerer does; collect every event it yields."""
    return [event.payload async for event in trigger.run()]


def _deferred_generation(i: int, loop: asyncio.AbstractEventLoop) -> tuple[str, Future[list[dict[str, Any]]]]:
    """Submit, then hand the wait to a trigger on the shared loop (the worker slot is free)."""
    generation_id = _submit(i)
    trigger = _trigger(generation_id)
    # The trigger must survive the round trip through the triggerer's table.
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith("KlingGenerationTrigger")
    trigger = KlingGenerationTrigger(**kwargs)
    return generation_id, asyncio.run_coroutine_threadsafe(_drive_trigger(trigger), loop)


def _expected(outcome: str) -> tuple[GenerationStatus, str | None]:
    return {
        "completed": (GenerationStatus.COMPLETED, None),
        "error": (GenerationStatus.FAILED, "Could not detect face in the image"),
        "error_2026": (GenerationStatus.FAILED, "ContentPolicyViolation"),
    }[outcome]


def test_200_generations_through_faults(faulty_emulator: KlingEmulator) -> None:
    emu = faulty_emulator
    emu.reset()
    emu.set_fault_rate(
        FAULT_RATE,
        kinds=[{**f, "method": "GET"} for f in GET_FAULTS] + [{**f, "method": "POST"} for f in POST_FAULTS],
        seed=SEED,
        methods=("GET", "POST"),
    )

    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="triggerer-loop", daemon=True)
    loop_thread.start()
    started = time.monotonic()
    try:
        half = GENERATIONS // 2
        # One worker thread per synchronous wait; deferring tasks only submit, so a few threads do.
        with (
            ThreadPoolExecutor(half, thread_name_prefix="worker") as workers,
            ThreadPoolExecutor(16, thread_name_prefix="deferring") as deferring,
        ):
            sync_jobs = [workers.submit(_sync_generation, i) for i in range(half)]
            deferred_jobs = [
                deferring.submit(_deferred_generation, i, loop) for i in range(half, GENERATIONS)
            ]
            sync_results = [job.result(timeout=DEADLINE + 30) for job in sync_jobs]
            deferred = [job.result(timeout=DEADLINE + 30) for job in deferred_jobs]
        trigger_results = [(gid, fut.result(timeout=DEADLINE + 30)) for gid, fut in deferred]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(timeout=10)
        loop.close()
    elapsed = time.monotonic() - started
    emu.set_fault_rate(0)

    records = [r for r in emu.requests if r.path == API_PATH]
    posts = [r for r in records if r.method == "POST"]
    gets = [r for r in records if r.method == "GET"]
    faults = Counter(
        f"{r.method} {r.fault}" + (" +Retry-After" if r.retry_after is not None else "")
        for r in records
        if r.fault
    )
    generations = emu.generations
    sync_ids = {gid for gid, _ in sync_results}
    trigger_ids = {gid for gid, _ in trigger_results}

    outcomes: Counter[str] = Counter()
    for gid, result in sync_results:
        status, message = _expected(generations[gid].outcome)
        if status is GenerationStatus.COMPLETED:
            assert isinstance(result, Generation), (gid, result)
            assert result.status is GenerationStatus.COMPLETED
            assert result.id == gid
            assert result.video_url
            assert result.file_size == len(emu.video_data(gid))
            outcomes["hook: completed"] += 1
        else:
            assert isinstance(result, KlingGenerationFailed), (gid, result)
            assert result.generation_id == gid
            assert message is not None
            assert message in result.message
            outcomes["hook: KlingGenerationFailed"] += 1
    for gid, events in trigger_results:
        # One event, and never a transient fault surfacing as the trigger's end.
        assert len(events) == 1, (gid, events)
        event = KlingTriggerEvent.model_validate(events[0])
        assert event.generation_id == gid
        assert not event.retryable, event
        status, message = _expected(generations[gid].outcome)
        if status is GenerationStatus.COMPLETED:
            assert event.status == "success", event
            assert event.generation is not None
            assert event.generation.video_url
            outcomes["trigger: success event"] += 1
        else:
            assert event.status == "error", event
            assert message is not None
            assert message in event.message
            outcomes["trigger: error event"] += 1

    get_faults = {k: v for k, v in faults.items() if k.startswith("GET")}
    post_faults = {k: v for k, v in faults.items() if k.startswith("POST")}
    print(
        f"\nfault suite: {GENERATIONS} generations in {elapsed:.1f} s"
        f"\n  requests: POST {len(posts)} (answered 201: {sum(r.status == 201 for r in posts)}),"
        f" GET {len(gets)}"
        f"\n  faulted: {sum(faults.values())} of {len(records)} API requests"
        f" ({sum(faults.values()) / len(records):.0%})"
        f"\n  faults by kind (emulator): {dict(sorted(emu.fault_counts.items()))}"
        f"\n  POST faults: {dict(sorted(post_faults.items()))}"
        f"\n  GET faults: {dict(sorted(get_faults.items()))}"
        f"\n  outcomes: {dict(sorted(outcomes.items()))}"
    )

    # Exactly one created generation per logical submission, even though faulted POSTs were retried.
    assert len(generations) == GENERATIONS
    assert sum(r.status == 201 for r in posts) == GENERATIONS
    assert len(sync_ids | trigger_ids) == GENERATIONS
    assert sync_ids | trigger_ids == set(generations)
    assert len(posts) == GENERATIONS + sum(post_faults.values())
    assert sum(outcomes.values()) == GENERATIONS
    assert outcomes["hook: KlingGenerationFailed"] == outcomes["trigger: error event"] == 20
    # Every fault kind was really thrown, on the path it targets.
    for spec in GET_FAULTS:
        key = f"GET {spec['kind']}" + (" +Retry-After" if "retry_after" in spec else "")
        assert get_faults.get(key, 0) > 0, key
    for spec in POST_FAULTS:
        key = f"POST {spec['kind']}" + (" +Retry-After" if "retry_after" in spec else "")
        assert post_faults.get(key, 0) > 0, key
    assert 0.1 < sum(faults.values()) / len(records) < 0.3
    # Both halves were polled: the sync path and the triggers each saw faults and survived them.
    faulted_ids = {r.query.get("generation_id") for r in gets if r.fault}
    assert faulted_ids & sync_ids
    assert faulted_ids & trigger_ids


@pytest.mark.parametrize(
    ("kind", "settings"),
    [
        ("500", {}),
        ("502", {}),
        ("504", {}),
        ("non_json", {}),
        ("reset", {}),
        ("500", {"after_create": True}),
        ("reset_mid", {}),
        ("truncated", {}),
        ("slow", {"delay": 1.0}),
    ],
    ids=["500", "502", "504", "non_json", "reset", "500-after-create", "reset_mid", "truncated", "slow"],
)
def test_ambiguous_post_failure_is_not_sent_again(
    faulty_emulator: KlingEmulator, kind: str, settings: dict[str, Any]
) -> None:
    """A POST that may have created a generation is never repeated: at most one generation, never two."""
    emu = faulty_emulator
    emu.reset()
    emu.inject(kind, method="POST", **settings)
    hook = KlingHook(CONN_ID, timeout=WAIT_TIMEOUT, max_attempts=MAX_ATTEMPTS, **RETRY)
    with pytest.raises((KlingConnectionError, KlingServerError)):
        hook.submit_generation(_request(0))
    created = kind in ("reset_mid", "truncated", "slow") or settings.get("after_create", False)
    # A slow answer is still being worked on when the client gives up: let it land before counting.
    deadline = time.monotonic() + 5
    while created and not emu.generations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emu.generations) == (1 if created else 0)
    assert emu.count("POST") == 1
    assert emu.fault_counts == {kind: 1}


@pytest.mark.parametrize("kind", ["429", "503"])
def test_refused_post_is_retried_until_the_attempts_run_out(
    faulty_emulator: KlingEmulator, kind: str
) -> None:
    emu = faulty_emulator
    emu.reset()
    emu.inject(kind, method="POST", times=None, retry_after=0.05)
    hook = KlingHook(CONN_ID, timeout=SUBMIT_TIMEOUT, max_attempts=3, **RETRY)
    with pytest.raises(KlingAPIError) as info:
        hook.submit_generation(_request(0))
    assert info.value.status_code == int(kind)
    assert emu.count("POST") == 3
    assert emu.generations == {}


def test_outage_longer_than_the_attempts_ends_the_trigger_with_a_retryable_error(
    faulty_emulator: KlingEmulator,
) -> None:
    """A service down for good gives one error event the task may retry (it reconnects, never resubmits)."""
    emu = faulty_emulator
    emu.reset()
    generation_id = _submit(1)
    emu.inject("503", method="GET", times=None)
    trigger = _trigger(generation_id, max_attempts=3)
    events = asyncio.run(_drive_trigger(trigger))
    assert len(events) == 1
    event = KlingTriggerEvent.model_validate(events[0])
    assert event.status == "error"
    assert event.retryable is True
    assert "503" in event.message
    assert emu.count("GET") == 3
    assert emu.count("POST") == 1


def test_trigger_survives_resets_aiohttp_would_hide(faulty_emulator: KlingEmulator) -> None:
    """aiohttp repeats an idempotent GET once after a reset; two resets in a row reach the hook's retry."""
    emu = faulty_emulator
    emu.reset()
    generation_id = _submit(2)
    emu.inject("reset", method="GET", times=2)
    emu.inject("reset_mid", method="GET", times=2)
    trigger = _trigger(generation_id)
    events = asyncio.run(_drive_trigger(trigger))
    event = KlingTriggerEvent.model_validate(events[0])
    assert len(events) == 1
    assert event.status == "success", events
    assert emu.fault_counts == {"reset": 2, "reset_mid": 2}
    assert emu.count("GET") >= 5
    assert emu.count("POST") == 1
    assert len(emu.generations) == 1
