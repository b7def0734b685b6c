"""KlingHook against the emulator over real sockets: submit, poll, wait and the async path."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import re
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from airflow_provider_kling.emulator import KlingEmulator
from airflow_provider_kling.exceptions import (
    KlingGenerationFailed,
    KlingGenerationTimeout,
    KlingNotFoundError,
)
from airflow_provider_kling.hooks._transport import shared_session_in_use
from airflow_provider_kling.models import Generation, GenerationStatus
from tests.support.connections import API_KEY, connection_json
from tests.support.hooks import MODEL, REQUEST, make_hook

if TYPE_CHECKING:
    from collections.abc import Iterator

    import aiohttp

UUID_ID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:" + re.escape(MODEL) + "$"
)


def messages(events: list[dict[str, Any]]) -> list[str]:
    """The text of captured structlog events, formatted as the task log shows them."""
    out = []
    for event in events:
        args = event.get("positional_args")
        out.append(event["event"] % args if args else str(event["event"]))
    return out


@pytest.fixture
def hook_logs() -> Iterator[list[dict[str, Any]]]:
    """Events the hook logs through ``self.log`` (read them with :func:`messages`).

    Airflow 3 routes ``self.log`` through structlog straight to its own output, not through stdlib
    logging, so caplog never sees these records; structlog's capture replaces that output instead.
    """
    with structlog.testing.capture_logs() as events:
        yield events


@pytest.fixture
def style_emulator(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KlingEmulator]:
    """A private emulator configured by the test's parameters, wired to connection ``kling_style``.

    Generations take 5 s (0.5 s queued) so each phase can be observed without racing the clock.
    """
    options = {"generation_seconds": 5.0, **getattr(request, "param", {})}
    with KlingEmulator(api_key=API_KEY, **options) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_KLING_STYLE", connection_json(host=emu.base_url, password=API_KEY))
        yield emu


def test_submit_returns_the_id_and_sends_the_validated_body(
    emulator: Any, hook_logs: list[dict[str, Any]]
) -> None:
    hook = make_hook()
    generation_id = hook.submit_generation({**REQUEST, "duration": 10, "cfg_scale": 0.5})

    assert UUID_ID.match(generation_id)
    assert list(emulator.generations) == [generation_id]
    (post,) = emulator.requests
    assert post.method == "POST"
    assert post.auth_ok is True
    # Only the fields that were set, duration as the page types it (a string).
    assert post.json == {**REQUEST, "duration": "10", "cfg_scale": 0.5}
    # The id names the model already: the line says it once.
    assert f"Kling generation {generation_id} submitted (legacy endpoint)" in messages(hook_logs)


def test_get_generation_reads_pending_then_completed(style_emulator: KlingEmulator) -> None:
    emulator = style_emulator
    hook = make_hook("kling_style")
    generation_id = hook.submit_generation(REQUEST)

    pending = hook.get_generation(generation_id)
    assert isinstance(pending, Generation)
    assert pending.id == generation_id
    assert pending.status is GenerationStatus.PENDING
    assert pending.raw_status in ("queued", "generating")
    assert pending.video_url is None
    assert not pending.is_terminal

    emulator.complete(generation_id)
    done = hook.get_generation(generation_id)
    assert done.status is GenerationStatus.COMPLETED
    assert done.raw_status == "completed"
    assert done.is_terminal
    assert done.video_url is not None
    assert done.video_url.startswith(emulator.base_url + "/_emulator/videos/")
    assert done.video_url.endswith("/output.mp4")
    assert done.file_name == "output.mp4"
    assert done.file_size == len(emulator.video_data(generation_id))
    assert done.content_type == "video/mp4"
    assert done.duration == 5
    assert done.error is None
    # The body reports tokens; the billed USD comes from the answer's x-aimlapi-usd-spent header.
    assert done.usage == {"tokens_used": 420_000, "usd_spent": 0.42}
    assert emulator.count("GET") == 2


@pytest.mark.parametrize(
    ("style_emulator", "id_pattern", "usage"),
    [
        pytest.param(
            {"id_key": "generation_id", "id_style": "short", "usage_style": "credits"},
            r"^gen_[0-9a-f]{8}$",
            {"credits_used": 420_000, "usd_spent": 0.42},
            id="generation_id-key-short-id-credits",
        ),
        pytest.param(
            {"id_key": "generation_id"},
            UUID_ID.pattern,
            {"tokens_used": 420_000, "usd_spent": 0.42},  # the USD from the cost header
            id="generation_id-key-uuid",
        ),
        pytest.param(
            {"id_style": "short", "usage_style": "credits"},
            r"^gen_[0-9a-f]{8}$",
            {"credits_used": 420_000, "usd_spent": 0.42},
            id="id-key-short-id",
        ),
    ],
    indirect=["style_emulator"],
)
def test_id_and_usage_variants(style_emulator: KlingEmulator, id_pattern: str, usage: dict[str, Any]) -> None:
    hook = make_hook("kling_style")
    generation_id = hook.submit_generation(REQUEST)

    assert re.match(id_pattern, generation_id), generation_id
    assert list(style_emulator.generations) == [generation_id]
    style_emulator.complete(generation_id)
    done = hook.get_generation(generation_id)
    assert done.id == generation_id
    assert done.status is GenerationStatus.COMPLETED
    assert done.usage == usage


@pytest.mark.parametrize(
    ("style_emulator", "words"),
    [
        pytest.param(
            {"status_style": "documented"}, ("queued", "generating", "completed", "error"), id="documented"
        ),
        pytest.param(
            {"status_style": "alternate"}, ("waiting", "processing", "succeeded", "failed"), id="alternate"
        ),
    ],
    indirect=["style_emulator"],
)
def test_status_words_are_normalised_and_kept(style_emulator: KlingEmulator, words: tuple[str, ...]) -> None:
    queued, running, done, failed = words
    hook = make_hook("kling_style")
    # 20 s generations: "queued" for the first 2 s, then "generating" for 18 s. Each phase is
    # observed without racing the clock; the end is forced through the emulator's control API.
    ok_id = hook.submit_generation({**REQUEST, "prompt": "a cat turns its head [seconds:20]"})
    bad_id = hook.submit_generation({**REQUEST, "prompt": "a cat [error] [seconds:20]"})

    first = hook.get_generation(ok_id)
    assert first.status is GenerationStatus.PENDING
    assert first.raw_status in (queued, running)
    # Queued for 60 s: its first poll surely sees the queued word.
    slow_id = hook.submit_generation({**REQUEST, "prompt": "a cat waits [seconds:600]"})
    assert (hook.get_generation(slow_id).raw_status, first.status) == (queued, GenerationStatus.PENDING)

    second = first
    while second.raw_status == queued:  # bounded: the emulator moves on 2 s after the POST
        time.sleep(0.1)
        second = hook.get_generation(ok_id)
    assert (second.raw_status, second.status) == (running, GenerationStatus.PENDING)

    style_emulator.complete(ok_id)
    style_emulator.complete(bad_id)
    finished = hook.get_generation(ok_id)
    assert (finished.raw_status, finished.status) == (done, GenerationStatus.COMPLETED)
    assert finished.video_url
    broken = hook.get_generation(bad_id)
    assert (broken.raw_status, broken.status) == (failed, GenerationStatus.FAILED)
    assert broken.error == "image_url: Could not detect face in the image"


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        pytest.param("[error]", "image_url: Could not detect face in the image", id="detail-shape"),
        pytest.param(
            "[error:2026]",
            "ContentPolicyViolation: The prompt was rejected by the content policy",
            id="2026-shape",
        ),
    ],
)
def test_both_error_shapes_give_readable_messages(emulator: Any, marker: str, message: str) -> None:
    hook = make_hook()
    generation_id = hook.submit_generation({**REQUEST, "prompt": f"a cat {marker}"})
    emulator.complete(generation_id)

    generation = hook.get_generation(generation_id)
    assert generation.status is GenerationStatus.FAILED
    assert generation.raw_status == "error"
    assert generation.error == message
    assert generation.video_url is None

    with pytest.raises(KlingGenerationFailed) as info:
        hook.wait_for_generation(generation_id, poll_interval=0.05, timeout=5)
    assert info.value.generation_id == generation_id
    assert info.value.message == message
    assert str(info.value) == f"Kling generation {generation_id} failed: {message}"


def test_wait_for_generation_logs_each_status_change(emulator: Any, hook_logs: list[dict[str, Any]]) -> None:
    hook = make_hook()
    # 3 s polled every 0.05 s: dozens of polls for three statuses, on any machine.
    generation_id = hook.submit_generation({**REQUEST, "prompt": "a cat turns its head [seconds:3]"})

    done = hook.wait_for_generation(generation_id, poll_interval=0.05, timeout=60)

    assert done.status is GenerationStatus.COMPLETED
    assert done.file_size == len(emulator.video_data(generation_id))
    pattern = re.compile(rf"^Kling generation {re.escape(generation_id)} is (\w+) after (\d+\.\d) s$")
    changes = [m.groups() for m in map(pattern.match, messages(hook_logs)) if m]
    statuses = [status for status, _ in changes]
    elapsed = [float(seconds) for _, seconds in changes]
    # One line per change, never per poll: the emulator was polled more often than it changed.
    assert statuses[-1] == "completed"
    assert set(statuses) <= {"queued", "generating", "completed"}
    assert len(statuses) == len(set(statuses))
    assert emulator.count("GET") > len(statuses)
    assert elapsed == sorted(elapsed)


def test_wait_for_generation_times_out(emulator: Any) -> None:
    hook = make_hook()
    # A generation that takes 10 minutes: the 0.05 s wait surely ends before it.
    generation_id = hook.submit_generation({**REQUEST, "prompt": "a slow cat [seconds:600]"})

    with pytest.raises(KlingGenerationTimeout) as info:
        hook.wait_for_generation(generation_id, poll_interval=0.01, timeout=0.05)

    assert info.value.generation_id == generation_id
    assert info.value.last_status in ("queued", "generating")
    assert generation_id in str(info.value)
    assert "may still complete" in str(info.value)
    assert emulator.count("GET") >= 1


def test_retries_emit_no_deprecation_warning(emulator: Any) -> None:
    # Retry settings are built on every call: a library deprecation there would flood task logs.
    hook = make_hook()
    generation_id = hook.submit_generation(REQUEST)
    emulator.inject("503", method="GET")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hook.get_generation(generation_id)
    assert emulator.count("GET") == 2
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == []


# --------------------------------------------------------------------------------------- async
async def test_aget_generation_reads_the_generation(emulator: Any) -> None:
    hook = make_hook()
    generation_id = hook.submit_generation(REQUEST)

    pending = await hook.aget_generation(generation_id)
    assert pending.status is GenerationStatus.PENDING
    assert pending.id == generation_id

    emulator.complete(generation_id)
    done = await hook.aget_generation(generation_id)
    assert done.status is GenerationStatus.COMPLETED
    assert done.file_size == len(emulator.video_data(generation_id))
    assert done.video_url
    assert done.video_url.endswith("/output.mp4")
    assert [r.auth_ok for r in emulator.requests if r.method == "GET"] == [True, True]
    # Outside an async_session block each call opens and closes its own session.
    assert shared_session_in_use(hook.kling_conn_id) is None


async def test_aget_generation_retries_and_maps_errors(emulator: Any) -> None:
    hook = make_hook(max_attempts=3)
    generation_id = hook.submit_generation(REQUEST)
    emulator.inject("502", times=2, method="GET")

    generation = await hook.aget_generation(generation_id)
    assert generation.id == generation_id
    assert emulator.count("GET") == 3

    with pytest.raises(KlingNotFoundError) as info:
        await hook.aget_generation("gen_doesnotexist")
    assert info.value.status_code == 404
    assert info.value.message == "Generation not found"
    assert emulator.count("GET") == 4  # a 404 is not retried


async def test_polls_inside_the_hooks_block_use_the_session_it_holds(emulator: Any) -> None:
    """A trigger holds the shared session for its whole life: its polls must not take it again."""
    hook = make_hook()
    generation_id = hook.submit_generation(REQUEST)
    # A slow answer keeps the poll in flight long enough to be watched (1 s, against a 60 s read timeout).
    emulator.inject("slow", times=1, method="GET", delay=1)

    async with hook.async_session() as session:
        poll = asyncio.create_task(hook.aget_generation(generation_id))
        seen = set()
        while not poll.done():
            seen.add(shared_session_in_use("kling_default"))
            await asyncio.sleep(0.01)
        assert (await poll).id == generation_id
        assert seen == {(session, 1)}
        assert emulator.count("GET") == 1
    assert session.closed


async def test_overlapping_blocks_of_one_hook_leave_it_no_closed_session(emulator: Any) -> None:
    """Blocks of one hook may end in any order; once the last ends, a call takes a session afresh."""
    hook = make_hook()
    generation_id = hook.submit_generation(REQUEST)
    first_in, second_in, first_out = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with hook.async_session():
            first_in.set()
            await second_in.wait()
        first_out.set()

    async def second() -> aiohttp.ClientSession:
        await first_in.wait()
        async with hook.async_session() as session:
            second_in.set()
            await first_out.wait()
            assert (await hook.aget_generation(generation_id)).id == generation_id
        return session

    _, session = await asyncio.gather(first(), second())
    assert session.closed
    assert shared_session_in_use("kling_default") is None
    assert (await hook.aget_generation(generation_id)).id == generation_id
    assert emulator.count("GET") == 2


def test_one_hook_in_two_event_loops_polls_each_on_its_own_loops_session(emulator: Any) -> None:
    """A hook with blocks open in two threads' loops at once never lends one loop's session to the other."""
    hook = make_hook()
    generation_id = hook.submit_generation(REQUEST)
    both_in = threading.Barrier(2, timeout=30)

    async def hold_and_poll() -> bool:
        async with hook.async_session() as session:
            await asyncio.to_thread(both_in.wait)
            assert (await hook.aget_generation(generation_id)).id == generation_id
            return session is shared_session_in_use("kling_default")[0]  # type: ignore[index]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        own = [f.result(timeout=60) for f in [pool.submit(asyncio.run, hold_and_poll()) for _ in range(2)]]
    assert own == [True, True]
    assert emulator.count("GET") == 2


async def test_concurrent_polls_share_one_session_and_close_it(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = make_hook()
    ids = [hook.submit_generation(REQUEST) for _ in range(3)]
    for generation_id in ids:
        emulator.complete(generation_id)
    # Triggers each build their own hook for the same connection: they must still share.
    hooks = [make_hook() for _ in range(6)]
    for each in hooks:
        await each.aendpoint()
    # Slow answers keep every call in flight together (3 s each, against a 60 s read timeout).
    emulator.inject("slow", times=None, method="GET", delay=3)

    async with hook.async_session() as session:
        assert shared_session_in_use("kling_default") == (session, 1)
        tasks = [asyncio.create_task(each.aget_generation(ids[i % len(ids)])) for i, each in enumerate(hooks)]

        def holders() -> int:
            in_use = shared_session_in_use("kling_default")
            # Every call holds the one registered session while its slowed request is in flight.
            assert in_use is not None
            assert in_use[0] is session
            return in_use[1]

        while holders() < 1 + len(hooks) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.01)
        assert holders() == 1 + len(hooks)
        assert not any(t.done() for t in tasks)
        results = await asyncio.gather(*tasks)
        assert holders() == 1
        assert not session.closed

    assert [r.status for r in results] == [GenerationStatus.COMPLETED] * len(hooks)
    assert [r.id for r in results] == [ids[i % len(ids)] for i in range(len(hooks))]
    assert session.closed
    assert shared_session_in_use("kling_default") is None
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]
