"""KlingHook error mapping and retry rules, against faults the emulator injects on real sockets."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingConnectionError,
    KlingForbiddenError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingServerError,
)
from airflow_provider_kling.hooks.kling import GENERATION_PATH
from tests.support.connections import closed_port, use_connection
from tests.support.hooks import MODEL, REQUEST, make_hook


def submitted(emulator: Any) -> str:
    """Create a generation with a plain client call and return its id."""
    return make_hook().submit_generation(REQUEST)


# ----------------------------------------------------------------------------- one error per class
def test_400_from_the_service_carries_status_message_and_request_id(emulator: Any) -> None:
    hook = make_hook()
    # Past the client's checks (check_capabilities=False), to see how the service's own 400 comes back.
    with pytest.raises(KlingBadRequestError) as info:
        hook.submit({**REQUEST, "duration": "7", "check_capabilities": False})

    err = info.value
    assert err.status_code == 400
    assert err.message == "Invalid enum value. Expected '5' | '10', received '7'"
    assert err.request_id is not None
    uuid.UUID(err.request_id)
    assert (err.method, err.path) == ("POST", GENERATION_PATH)
    assert str(err) == (
        f"Kling API POST {GENERATION_PATH} answered 400: Invalid enum value. Expected '5' | '10', "
        f"received '7' (requestId {err.request_id})"
    )
    assert emulator.count("POST") == 1  # a 400 is never retried
    assert emulator.generations == {}


def test_401_wrong_key(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, "kling_wrong_key", host=emulator.base_url, password="not-the-right-key")
    hook = make_hook("kling_wrong_key")

    with pytest.raises(KlingAuthError) as info:
        hook.submit_generation(REQUEST)
    assert info.value.status_code == 401
    assert info.value.message == "Invalid API key"
    assert "answered 401: Invalid API key" in str(info.value)

    with pytest.raises(KlingAuthError):
        hook.get_generation("gen_0badc0de")
    assert [(r.method, r.auth_ok) for r in emulator.requests] == [("POST", False), ("GET", False)]
    assert emulator.generations == {}


def test_403_no_credits(emulator: Any) -> None:
    emulator.inject("403", method="POST")

    with pytest.raises(KlingForbiddenError) as info:
        make_hook().submit_generation(REQUEST)

    assert info.value.status_code == 403
    assert info.value.message == "Insufficient credits or no access to this model"
    assert info.value.request_id
    assert emulator.count("POST") == 1
    assert emulator.generations == {}


def test_404_unknown_generation(emulator: Any) -> None:
    with pytest.raises(KlingNotFoundError) as info:
        make_hook().get_generation("gen_doesnotexist")

    assert info.value.status_code == 404
    assert info.value.message == "Generation not found"
    assert info.value.request_id
    assert emulator.count("GET") == 1
    assert emulator.requests[0].query == {"generation_id": "gen_doesnotexist"}


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        ("429", KlingRateLimitError),
        ("500", KlingServerError),
        ("502", KlingServerError),
        ("503", KlingServerError),
        ("504", KlingServerError),
    ],
)
def test_get_gives_up_after_max_attempts(emulator: Any, kind: str, error_class: type[KlingAPIError]) -> None:
    generation_id = submitted(emulator)
    emulator.inject(kind, times=None, method="GET")

    with pytest.raises(error_class) as info:
        make_hook(max_attempts=3).get_generation(generation_id)

    assert info.value.status_code == int(kind)
    assert info.value.retryable
    assert emulator.count("GET") == 3
    assert emulator.fault_counts == {kind: 3}


def test_post_gives_up_after_max_attempts_on_429(emulator: Any) -> None:
    emulator.inject("429", times=None, method="POST")

    with pytest.raises(KlingRateLimitError) as info:
        make_hook(max_attempts=3).submit_generation(REQUEST)

    assert info.value.message == "Too many requests"
    assert emulator.count("POST") == 3
    assert emulator.generations == {}


def test_connection_refused(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    use_connection(monkeypatch, "kling_closed", host=f"http://127.0.0.1:{port}", password="k-123456")
    hook = make_hook("kling_closed", max_attempts=2)

    with pytest.raises(KlingConnectionError) as info:
        hook.get_generation("gen_0badc0de")
    assert info.value.nothing_sent
    assert str(info.value).startswith(f"could not reach http://127.0.0.1:{port}")

    # Nothing was sent, so even a POST may be tried again; it still ends in the same error.
    with pytest.raises(KlingConnectionError) as info:
        hook.submit_generation(REQUEST)
    assert info.value.nothing_sent
    assert emulator.requests == []


# ----------------------------------------------------------------------------- retries
@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "504", "reset", "truncated", "non_json"])
def test_get_is_retried_and_succeeds(emulator: Any, kind: str) -> None:
    generation_id = submitted(emulator)
    emulator.complete(generation_id)
    emulator.inject(kind, times=2, method="GET")

    generation = make_hook(max_attempts=3).get_generation(generation_id)

    assert generation.id == generation_id
    assert generation.video_url
    assert emulator.count("GET") == 3
    assert emulator.fault_counts == {kind: 2}
    assert [r.fault for r in emulator.requests if r.method == "GET"] == [kind, kind, None]


def test_retry_after_is_honoured(emulator: Any) -> None:
    generation_id = submitted(emulator)
    emulator.inject("429", retry_after=1, method="GET")
    # Backoff alone would wait at most 0.2 s: only the header can explain a 1 s gap.
    hook = make_hook(retry_min_wait=0.01, retry_max_wait=0.2)

    start = time.monotonic()
    generation = hook.get_generation(generation_id)
    elapsed = time.monotonic() - start

    assert generation.id == generation_id
    first, second = (r for r in emulator.requests if r.method == "GET")
    assert (first.status, first.fault, second.status) == (429, "429", 200)
    assert second.time - first.time >= 0.95
    assert elapsed >= 0.95


@pytest.mark.parametrize("kind", ["429", "503"])
def test_post_is_retried_when_nothing_was_created(emulator: Any, kind: str) -> None:
    emulator.inject(kind, times=2, method="POST")

    generation_id = make_hook(max_attempts=3).submit_generation(REQUEST)

    assert emulator.count("POST") == 3
    assert list(emulator.generations) == [generation_id]


def test_post_is_not_retried_after_a_read_timeout(emulator: Any) -> None:
    emulator.inject("slow", delay=1, method="POST")
    hook = make_hook(timeout=(2, 0.3))

    with pytest.raises(KlingConnectionError) as info:
        hook.submit_generation(REQUEST)

    assert not info.value.nothing_sent
    assert str(info.value).startswith(f"no answer from {emulator.base_url}")
    assert emulator.count("POST") == 1
    # The service did create it after all: sending the POST again would have paid twice.
    deadline = time.monotonic() + 5
    while not emulator.generations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emulator.generations) == 1
    assert emulator.count("POST") == 1


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        ("500", KlingServerError),
        ("502", KlingServerError),
        ("504", KlingServerError),
        ("reset", KlingConnectionError),
    ],
)
def test_post_is_not_retried_after_an_ambiguous_failure(
    emulator: Any, kind: str, error_class: type[Exception]
) -> None:
    emulator.inject(kind, times=None, method="POST")

    with pytest.raises(error_class) as info:
        make_hook(max_attempts=5).submit_generation(REQUEST)

    if isinstance(info.value, KlingConnectionError):
        assert not info.value.nothing_sent
    assert emulator.count("POST") == 1
    assert emulator.fault_counts == {kind: 1}


def test_post_after_create_failure_is_reported_not_retried(emulator: Any) -> None:
    # The generation exists but the answer says 500: retrying would start a second paid one.
    emulator.inject("500", method="POST", after_create=True)

    with pytest.raises(KlingServerError):
        make_hook().submit_generation({**REQUEST, "model": MODEL})

    assert emulator.count("POST") == 1
    assert len(emulator.generations) == 1
