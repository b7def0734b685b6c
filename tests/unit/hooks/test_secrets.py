"""The API key never reaches a log record, an exception text or a repr."""

from __future__ import annotations

import asyncio
import logging
import traceback
from pathlib import Path
from typing import Any

import pytest
import structlog

from airflow_provider_kling.emulator.app import VIDEO_PREFIX
from airflow_provider_kling.exceptions import (
    KlingAuthError,
    KlingConnectionError,
    KlingError,
    KlingGenerationFailed,
    KlingNotFoundError,
)
from tests.support.connections import API_KEY, closed_port, use_connection
from tests.support.hooks import REQUEST, completed_generation, make_hook

WRONG_KEY = "wrong-key-d41d8cd98f"


def exception_texts(exc: BaseException) -> list[str]:
    """Everything a traceback of ``exc`` could show: message, repr, args and the chained causes."""
    texts = ["".join(traceback.format_exception(exc)), repr(exc), repr(exc.args)]
    seen: BaseException | None = exc
    while seen is not None:
        texts.append(repr(vars(seen)))
        seen = seen.__cause__ or seen.__context__
    return texts


def test_key_is_never_logged_nor_in_errors(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="airflow.task")
    texts: list[str] = []

    with structlog.testing.capture_logs() as events:
        hook = make_hook(max_attempts=3)
        texts += [repr(hook), repr(hook.endpoint), str(hook.endpoint)]
        # Retries log the failure they retry; the download logs its target.
        emulator.inject("429", method="POST")
        emulator.inject("503", method="GET")
        generation_id = hook.submit_generation(REQUEST)
        emulator.complete(generation_id)
        done = hook.wait_for_generation(generation_id, poll_interval=0.05, timeout=10)
        hook.download_video(done.video_url or "", tmp_path, expected_size=done.file_size)
        texts.append(str(asyncio.run(hook.aget_generation(generation_id))))
        texts.append(repr(hook.test_connection()))

        failed_id = hook.submit_generation({**REQUEST, "prompt": "a cat [error]"})
        emulator.complete(failed_id)
        errors: list[KlingError] = []
        with pytest.raises(KlingGenerationFailed) as failed:
            hook.wait_for_generation(failed_id, poll_interval=0.05, timeout=10)
        errors.append(failed.value)
        with pytest.raises(KlingNotFoundError) as missing:
            hook.get_generation("gen_doesnotexist")
        errors.append(missing.value)

        use_connection(monkeypatch, "kling_wrong_key", host=emulator.base_url, password=WRONG_KEY)
        wrong = make_hook("kling_wrong_key")
        with pytest.raises(KlingAuthError) as refused:
            wrong.submit_generation(REQUEST)
        errors.append(refused.value)
        texts.append(repr(wrong.test_connection()))

        use_connection(
            monkeypatch, "kling_closed", host=f"http://127.0.0.1:{closed_port()}", password=API_KEY
        )
        closed = make_hook("kling_closed", max_attempts=2)
        with pytest.raises(KlingConnectionError) as unreachable:
            closed.get_generation(generation_id)
        errors.append(unreachable.value)
        texts.append(repr(closed.test_connection()))
        texts += [repr(closed), repr(closed.endpoint)]

    for exc in errors:
        texts += exception_texts(exc)
    records = [f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records]
    structured = [repr(event) for event in events]

    # The flow really ran and logged: the checks below have something to search.
    assert emulator.count(path=VIDEO_PREFIX) == 1
    assert emulator.fault_counts == {"429": 1, "503": 1}
    assert any("retrying in" in e for e in structured)
    assert any("Downloaded" in e for e in structured)
    assert any(f"{generation_id} is completed" in e for e in structured)
    assert any("urllib3" in r for r in records)
    assert "Invalid API key" in str(refused.value)
    assert "could not reach" in str(unreachable.value)

    for secret in (API_KEY, WRONG_KEY):
        assert not [t for t in texts if secret in t]
        assert not [r for r in records if secret in r]
        assert not [e for e in structured if secret in e]
    # The endpoint keeps the key (it must send it), only hidden from view.
    assert hook.endpoint.api_key == API_KEY
    assert "api_key=***" in repr(hook.endpoint)


def test_key_is_not_in_recorded_requests_or_urls(emulator: Any) -> None:
    video = completed_generation(emulator)

    # It travels in the Authorization header only: never in a URL, query or body.
    assert video.video_url
    assert API_KEY not in video.video_url
    for rec in emulator.requests:
        assert API_KEY not in repr(rec.as_dict())
    assert all(rec.auth_ok for rec in emulator.requests)
