"""A hostile service and network (issue 10): each defect of the first release, pinned over real sockets.

The hostile servers here are small stdlib servers bound to loopback (127.0.0.1, and 127.0.0.2 standing
for "another host"); nothing is sent anywhere else. The refusal of private, link-local and reserved
addresses is checked before any connection is made, so it is tested by resolving, not by connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog

from airflow_provider_kling.emulator import KlingEmulator
from airflow_provider_kling.emulator.app import VIDEO_PREFIX
from airflow_provider_kling.exceptions import (
    KlingAuthError,
    KlingConfigError,
    KlingConnectionError,
    KlingDownloadError,
    KlingForbiddenError,
    KlingGenerationTimeout,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingResponseTooLarge,
    KlingTLSError,
    KlingUnusableIdError,
    KlingValidationError,
)
from airflow_provider_kling.hooks.kling import KlingHook, post_may_have_created
from airflow_provider_kling.models import GenerationStatus
from airflow_provider_kling.triggers.kling import KlingGenerationTrigger
from tests.support.connections import API_KEY, connection_json
from tests.support.hooks import REQUEST

API_PATH = "/v2/generate/video/kling/generation"
SIGNATURE = "X-Amz-Signature=5ec7e7516a7e"
#: A bound for a test that would otherwise hang on the first release; never reached when it passes.
HANG_GUARD = 60.0


# ------------------------------------------------------------------------------------ hostile server
@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class HostileServer:
    """A threaded HTTP/1.1 server on a loopback address whose every answer the test writes.

    ``answer(handler)`` is called for each request (after it is recorded); the default answers 404.
    """

    host: str = "127.0.0.1"
    answer: Callable[[BaseHTTPRequestHandler], None] | None = None
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    bytes_sent: int = 0

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
                if server.answer is None:
                    send(self, 404, {"message": "nothing here"})
                else:
                    server.answer(self)

            do_GET = do_POST = _handle

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def count(self, path: str = "") -> int:
        return sum(1 for s in self.seen if s.path.startswith(path))


def send(
    handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}
    for key, value in all_headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)
    handler.wfile.flush()


def dribble(handler: BaseHTTPRequestHandler, body: bytes, pause: float, content_type: str) -> None:
    """Headers at once, then the body a byte at a time, ``pause`` seconds apart (until released)."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.flush()
    with contextlib.suppress(OSError):
        for i in range(len(body)):
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()
            time.sleep(pause)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


def use(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(**fields))


def hook_for(conn_id: str, **kwargs: Any) -> KlingHook:
    kwargs.setdefault("retry_min_wait", 0.01)
    kwargs.setdefault("retry_max_wait", 0.05)
    return KlingHook(conn_id, **kwargs)


async def first_event(trigger: KlingGenerationTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1, events
    return events[0]


def pending(generation_id: str = "gen_1") -> dict[str, Any]:
    return {"id": generation_id, "status": "generating"}


# ----------------------------------------------------------------------- #2 host parsing of the connection
def test_backslash_userinfo_host_never_reaches_the_other_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first release parsed this as 127.0.0.1 (loopback: plain http allowed) while requests
    # connected to OTHER-HOST and sent it the Bearer key in clear.
    with HostileServer(host="127.0.0.2") as other:
        use(monkeypatch, "kling_sneaky", host=f"http://127.0.0.2:{other.port}\\@127.0.0.1", password=API_KEY)
        hook = hook_for("kling_sneaky", max_attempts=1)
        with pytest.raises(KlingConfigError, match="backslash"):
            hook.get_generation("gen_1")
        with pytest.raises(KlingConfigError, match="backslash"):
            asyncio.run(hook.aget_generation("gen_1"))
        assert other.seen == []


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        pytest.param("http://api.example.com@127.0.0.1:8642", "user information", id="userinfo"),
        pytest.param("http://127.0.0.1:8642@api.example.com", "user information", id="userinfo-reversed"),
        pytest.param(f"https://user:{API_KEY}@api.example.com", "user information", id="userinfo-password"),
        pytest.param("http://127.0.0.1 .example.com", "whitespace", id="space"),
        pytest.param("http://127.0.0.1\t:8642", "whitespace", id="tab"),
        pytest.param("http://127.0.0.1\x00.example.com", "control characters", id="nul"),
        pytest.param("http://127.0.0.1\u200b.example.com", "control characters", id="zero-width"),
        pytest.param("http://2130706433:8642/", "dotted-quad", id="decimal-ipv4"),
        pytest.param("http://0177.0.0.1:8642/", "dotted-quad", id="octal-ipv4"),
        pytest.param("http://0x7f.0.0.1:8642/", "dotted-quad", id="hex-ipv4"),
        pytest.param("http://127.1:8642/", "dotted-quad", id="short-ipv4"),
        pytest.param("https://2130706433/", "dotted-quad", id="decimal-ipv4-https"),
        pytest.param("http://localhost.:8642", "ends in a dot", id="trailing-dot-localhost"),
        pytest.param("http://127.0.0.1.:8642", "ends in a dot", id="trailing-dot-ip"),
        pytest.param("http://127.0.0.1:99999", "port", id="bad-port"),
        pytest.param("https://api.example.com/?x=1", "query", id="query"),
    ],
)
def test_ambiguous_hosts_are_refused(monkeypatch: pytest.MonkeyPatch, host: str, reason: str) -> None:
    use(monkeypatch, "kling_ambiguous", host=host, password=API_KEY)
    with pytest.raises(KlingConfigError, match=reason) as info:
        KlingHook("kling_ambiguous").endpoint  # noqa: B018
    assert "'kling_ambiguous'" in str(info.value)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        pytest.param("HTTP://127.0.0.1:8642", "http://127.0.0.1:8642", id="uppercase-scheme"),
        pytest.param("HTTPS://API.Example.COM/", "https://api.example.com", id="uppercase-https-host"),
        pytest.param("http://[::1]:8642/", "http://[::1]:8642", id="ipv6-loopback"),
        pytest.param("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443", id="ipv6-https"),
        pytest.param("http://LOCALHOST:8642", "http://localhost:8642", id="uppercase-localhost"),
        pytest.param("http://127.0.0.1:8642/proxy/", "http://127.0.0.1:8642/proxy", id="path-prefix"),
    ],
)
def test_hosts_are_rebuilt_from_their_parsed_parts(
    monkeypatch: pytest.MonkeyPatch, host: str, base_url: str
) -> None:
    use(monkeypatch, "kling_parsed", host=host, password=API_KEY)
    assert KlingHook("kling_parsed").endpoint.base_url == base_url


@pytest.mark.parametrize(
    "host", ["http://10.0.0.1:8642", "http://[::ffff:7f00:1]:8642", "http://0.0.0.0:8642"]
)
def test_plain_http_only_to_what_ipaddress_calls_loopback(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    use(monkeypatch, "kling_not_loopback", host=host, password=API_KEY)
    with pytest.raises(KlingConfigError, match="plain http"):
        KlingHook("kling_not_loopback").endpoint  # noqa: B018


# ----------------------------------------------------------------------------- #6 download policy
@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://10.1.2.3/v.mp4", id="private-10"),
        pytest.param("https://172.16.0.9/v.mp4", id="private-172"),
        pytest.param("https://192.168.1.20/v.mp4", id="private-192"),
        pytest.param("https://169.254.169.254/latest/meta-data/", id="link-local-metadata"),
        pytest.param("https://[fe80::1]/v.mp4", id="link-local-v6"),
        pytest.param("https://[fd00::1]/v.mp4", id="unique-local-v6"),
        pytest.param("https://224.0.0.1/v.mp4", id="multicast"),
        pytest.param("https://240.0.0.1/v.mp4", id="reserved"),
        pytest.param("https://0.0.0.0/v.mp4", id="unspecified"),
        pytest.param("https://100.64.0.1/v.mp4", id="shared-cgnat"),
        pytest.param("https://[::ffff:169.254.169.254]/v.mp4", id="mapped-link-local"),
    ],
)
@pytest.mark.parametrize("allow_loopback", [False, True], ids=["default", "loopback-allowed"])
def test_private_and_reserved_video_hosts_are_refused_by_resolving(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, allow_loopback: bool
) -> None:
    use(monkeypatch, "kling_policy", password=API_KEY, allow_loopback_downloads=allow_loopback)
    with pytest.raises(KlingDownloadError, match="refusing to download") as info:
        KlingHook("kling_policy").download_video(url + "?" + SIGNATURE, tmp_path)
    assert "videos are fetched only from public addresses" in str(info.value)
    assert SIGNATURE not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/v.mp4",
        "https://127.0.0.1:9/v.mp4",
        "https://localhost:9/v.mp4",
        "https://[::1]:9/v.mp4",
    ],
)
def test_loopback_video_hosts_are_refused_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    use(monkeypatch, "kling_policy", password=API_KEY, allow_loopback_downloads=False)
    with pytest.raises(KlingDownloadError, match="loopback") as info:
        KlingHook("kling_policy").download_video(url, tmp_path)
    assert "allow_loopback_downloads" in str(info.value)


def test_plain_http_video_is_refused_by_default_and_allowed_to_loopback_when_asked(
    emulator: KlingEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    generation_id = hook_for("kling_default").submit_generation(REQUEST)
    emulator.complete(generation_id)
    done = hook_for("kling_default").get_generation(generation_id)
    assert done.video_url
    assert done.video_url.startswith("http://127.0.0.1:")

    use(monkeypatch, "kling_strict", host=emulator.base_url, password=API_KEY, allow_loopback_downloads=False)
    with pytest.raises(KlingDownloadError, match="loopback"):
        hook_for("kling_strict").download_video(done.video_url, tmp_path)
    assert emulator.count("GET", VIDEO_PREFIX) == 0  # refused before connecting

    written = hook_for("kling_default").download_video(done.video_url, tmp_path)
    assert Path(written).read_bytes() == emulator.video_data(generation_id)
    assert emulator.count("GET", VIDEO_PREFIX) == 1


def test_every_redirect_hop_is_checked(
    emulator: KlingEmulator, hostile: HostileServer, tmp_path: Path
) -> None:
    hook = hook_for("kling_default")
    redirect = f"{emulator.base_url}/_emulator/redirect?to="
    # A hop to a link-local (metadata-style) or private address is refused before it is connected to.
    for target in ("http://169.254.169.254/latest/meta-data/", "https://10.0.0.1/v.mp4", "ftp://127.0.0.1/v"):
        with pytest.raises(KlingDownloadError, match="refusing to download"):
            hook.download_video(redirect + target, tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []

    # Between loopback hosts, with the allowance on, a redirect is followed and checked again.
    with HostileServer(host="127.0.0.2") as other:
        other.answer = lambda h: send(h, 200, b"video-bytes", {"Content-Type": "video/mp4"})
        written = hook.download_video(redirect + f"{other.base_url}/v.mp4", tmp_path / "v.mp4")
        assert Path(written).read_bytes() == b"video-bytes"
        assert [s.path for s in other.seen] == ["/v.mp4"]


def test_api_key_is_never_sent_to_the_video_host(
    emulator: KlingEmulator, hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.answer = lambda h: send(h, 200, b"clip", {"Content-Type": "video/mp4"})
    hook_for("kling_default").download_video(f"{hostile.base_url}/v.mp4?{SIGNATURE}", tmp_path / "v.mp4")
    (seen,) = hostile.seen
    assert "Authorization" not in seen.headers
    assert API_KEY not in json.dumps(seen.headers)


# ---------------------------------------------------------------- #8 per-trigger timeouts, shared session
async def test_a_triggers_own_timeout_holds_on_a_session_another_trigger_made(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def hold(handler: BaseHTTPRequestHandler) -> None:
        hostile.release.wait(HANG_GUARD)  # answers only when the test ends
        with contextlib.suppress(OSError):
            send(handler, 200, pending())

    hostile.answer = hold
    use(monkeypatch, "kling_hostile", host=hostile.base_url, password=API_KEY)
    # The first trigger's hook creates the loop's shared session with long timeouts and holds it.
    patient = KlingHook("kling_hostile", timeout=(30.0, 300.0))
    async with patient.async_session():
        hasty = KlingGenerationTrigger(
            "gen_1",
            "kling_hostile",
            poll_interval=0.1,
            end_time=time.time() + 600,
            max_attempts=1,
            timeout=(1, 1),
        )
        payload = await asyncio.wait_for(first_event(hasty), HANG_GUARD / 2)
    assert payload["status"] == "error"
    assert payload["retryable"] is True
    assert "read 1.0 s" in payload["message"]
    assert hostile.count(API_PATH) == 1


# ---------------------------------------------------------------------- #9 signed URLs are redacted
def test_signed_query_strings_never_reach_errors_or_logs(
    emulator: KlingEmulator, hostile: HostileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def cut_short(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"x" * 10)
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)

    hook = hook_for("kling_default")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    errors: list[BaseException] = []
    with structlog.testing.capture_logs() as events:
        hostile.answer = cut_short
        for url in (
            f"{hostile.base_url}/cut.mp4?{SIGNATURE}",  # dropped mid-file (requests' text holds the URL)
            f"http://127.0.0.1:{closed_port}/v.mp4?{SIGNATURE}",  # refused connect
            f"{emulator.base_url}/_emulator/videos/nope/output.mp4?{SIGNATURE}",  # 404
        ):
            with pytest.raises((KlingConnectionError, KlingDownloadError)) as info:
                hook.download_video(url, tmp_path / "v.mp4", attempts=2)
            errors.append(info.value)
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [repr(event) for event in events] + [r.getMessage() for r in caplog.records]
    assert any("retrying" in t for t in texts)  # the retries were logged, with their errors
    assert any("<redacted>" in t for t in texts)
    assert not [t for t in texts if "5ec7e7516a7e" in t]


async def test_signed_query_strings_never_reach_trigger_events(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An answer the hook cannot read, carrying a signed URL: the event text must not repeat it.
    hostile.answer = lambda h: send(
        h, 502, f"<html>bad gateway to https://cdn.example/v.mp4?{SIGNATURE}</html>".encode()
    )
    use(monkeypatch, "kling_hostile", host=hostile.base_url, password=API_KEY)
    trigger = KlingGenerationTrigger("gen_1", "kling_hostile", end_time=time.time() + 60, max_attempts=1)
    payload = await first_event(trigger)
    assert payload["status"] == "error"
    assert "502" in payload["message"]
    assert "5ec7e7516a7e" not in payload["message"]


# --------------------------------------------------------------------- #11 downloads ask for identity
def test_downloads_ask_for_identity_encoding(
    emulator: KlingEmulator, hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.answer = lambda h: send(h, 200, b"clip", {"Content-Type": "video/mp4"})
    hook = hook_for("kling_default")
    hook.download_video(f"{hostile.base_url}/v.mp4", tmp_path / "a.mp4")
    assert hostile.seen[0].headers.get("Accept-Encoding") == "identity"

    # The emulator gzips a download when the client allows it (the first release did, then compared
    # the decoded size with the compressed Content-Length and called the file truncated).
    generation_id = hook.submit_generation(REQUEST)
    emulator.complete(generation_id)
    done = hook.get_generation(generation_id)
    emulator.inject("gzip", path_prefix=VIDEO_PREFIX)
    written = hook.download_video(done.video_url or "", tmp_path / "b.mp4", expected_size=done.file_size)
    assert Path(written).read_bytes() == emulator.video_data(generation_id)
    assert emulator.count("GET", VIDEO_PREFIX) == 1


# ------------------------------------------------------------ #12 the trigger's end_time bounds retries
async def test_retry_after_past_the_deadline_ends_in_a_timeout_event(emulator: KlingEmulator) -> None:
    generation_id = hook_for("kling_default").submit_generation(REQUEST)
    emulator.inject("429", method="GET", times=None, retry_after=120)
    trigger = KlingGenerationTrigger(generation_id, end_time=time.time() + 2, max_attempts=8)
    # The first release slept the 120 s Retry-After (up to 8 times) and then sent an error event.
    payload = await asyncio.wait_for(first_event(trigger), HANG_GUARD)
    assert payload["status"] == "timeout"
    assert payload["retryable"] is True
    assert "429" in payload["message"]
    assert "may still complete" in payload["message"]


async def test_backoff_is_cut_at_the_deadline(emulator: KlingEmulator) -> None:
    generation_id = hook_for("kling_default").submit_generation(REQUEST)
    emulator.inject("503", method="GET", times=None)
    trigger = KlingGenerationTrigger(
        generation_id, end_time=time.time() + 1.5, max_attempts=20, retry_min_wait=30, retry_max_wait=60
    )
    payload = await asyncio.wait_for(first_event(trigger), HANG_GUARD)
    assert payload["status"] == "timeout"
    # One poll, one wait cut to the time left, one last poll at the deadline: never 20 polls.
    assert emulator.count("GET") <= 3


def test_sync_wait_is_bounded_by_its_timeout_through_retries(emulator: KlingEmulator) -> None:
    hook = hook_for("kling_default", max_attempts=8)
    generation_id = hook.submit_generation(REQUEST)
    emulator.inject("429", method="GET", times=None, retry_after=120)
    with pytest.raises(KlingGenerationTimeout, match=generation_id):
        hook.wait_for_generation(generation_id, poll_interval=0.1, timeout=1.5)
    assert emulator.count("GET") <= 2


# --------------------------------------------------------------- #13 a total deadline per call (dribble)
DRIBBLED = json.dumps({"id": "gen_1", "status": "completed", "pad": "x" * 40}).encode()


def test_dribbling_api_answer_is_cut_at_the_call_deadline_sync(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile.answer = lambda h: dribble(h, DRIBBLED, 0.1, "application/json")  # ~8 s in all
    use(monkeypatch, "kling_hostile", host=hostile.base_url, password=API_KEY)
    hook = hook_for("kling_hostile", timeout=(1.0, 1.0), call_timeout=1.5, max_attempts=1)
    # Each byte comes well within the 1 s read timeout: only a wall-clock bound stops this call.
    with pytest.raises(KlingConnectionError, match=r"within 1\.5 s"):
        hook.get_generation("gen_1")


async def test_dribbling_api_answer_is_cut_at_the_call_deadline_async(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile.answer = lambda h: dribble(h, DRIBBLED, 0.1, "application/json")
    use(monkeypatch, "kling_hostile", host=hostile.base_url, password=API_KEY)
    hook = hook_for("kling_hostile", timeout=(1.0, 1.0), call_timeout=1.5, max_attempts=1)
    with pytest.raises(KlingConnectionError, match=r"whole call 1\.5 s"):
        await asyncio.wait_for(hook.aget_generation("gen_1"), HANG_GUARD)


def test_dribbling_download_is_cut_at_its_deadline(hostile: HostileServer, tmp_path: Path) -> None:
    hostile.answer = lambda h: dribble(h, b"v" * 200, 0.05, "video/mp4")  # ~10 s in all
    hook = hook_for("kling_default", timeout=(1.0, 1.0))
    with pytest.raises(KlingConnectionError, match="took longer than 2 s"):
        hook.download_video(f"{hostile.base_url}/v.mp4", tmp_path / "v.mp4", attempts=1, timeout=2)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ #14 API answers are capped
def _endless(hostile: HostileServer, announce: bool) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if announce:
            handler.send_header("Content-Length", str(80 * 1024 * 1024))
        handler.send_header("Connection", "close")
        handler.end_headers()
        piece = b'{"id": "gen_1", "pad": "' + b"x" * 65000
        with contextlib.suppress(OSError):
            for _ in range(80 * 16):  # 80 MiB at most, while the client reads
                handler.wfile.write(piece)
                hostile.bytes_sent += len(piece)
                piece = b"x" * 65536
        handler.close_connection = True

    return answer


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-length"])
def test_huge_answers_are_refused_without_being_read_sync(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, announce: bool
) -> None:
    hostile.answer = _endless(hostile, announce)
    use(monkeypatch, "kling_hostile", host=hostile.base_url, password=API_KEY)
    hook = hook_for("kling_hostile", max_attempts=3)
    with pytest.raises(KlingResponseTooLarge, match="more than the 1048576 bytes") as info:
        hook.get_generation("gen_1")
    assert not info.value.retryable
    assert hostile.count(API_PATH) == 1  # not retried: the same answer would come again
    assert hostile.bytes_sent < 40 * 1024 * 1024  # the client stopped reading long before 80 MiB


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-length"])
async def test_huge_answers_are_refused_without_being_read_async(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, announce: bool
) -> None:
    hostile.answer = _endless(hostile, announce)
    use(monkeypatch, "kling_hostile", host=hostile.base_url, password=API_KEY)
    trigger = KlingGenerationTrigger("gen_1", "kling_hostile", end_time=time.time() + 60, max_attempts=3)
    payload = await first_event(trigger)
    assert payload["status"] == "error"
    assert "more than the 1048576 bytes" in payload["message"]
    assert payload["retryable"] is True  # a retry of the task reconnects; nothing is paid again
    assert hostile.count(API_PATH) == 1
    assert hostile.bytes_sent < 40 * 1024 * 1024


def test_the_emulators_huge_fault_is_refused(emulator: KlingEmulator) -> None:
    hook = hook_for("kling_default", max_attempts=3)
    generation_id = hook.submit_generation(REQUEST)
    emulator.inject("huge", method="GET")
    with pytest.raises(KlingResponseTooLarge):
        hook.get_generation(generation_id)
    assert emulator.count("GET") == 1


# --------------------------------------------------------------------------------- #15 opaque ids
ODD_IDS = [
    "2b9c1c5e-7f0a-4b8e-9d57-0c1f3f1a9e11:kling-video/v1/standard/image-to-video",
    "QC4qjlUKt8ZedNi7r09LM",
    "789339022468063304",
    "task~7f3a@eu",
    "a+b&generation_id=c#d%2F?e=f;g",
    "../../etc/passwd",
]


@pytest.mark.parametrize("odd_id", ODD_IDS)
def test_ids_are_opaque_and_url_encoded(emulator: KlingEmulator, odd_id: str) -> None:
    hook = hook_for("kling_default")
    emulator.queue_ids(odd_id)
    assert hook.submit_generation(REQUEST) == odd_id
    emulator.complete(odd_id)
    assert hook.get_generation(odd_id).status is GenerationStatus.COMPLETED
    assert asyncio.run(hook.aget_generation(odd_id)).status is GenerationStatus.COMPLETED
    polls = [r for r in emulator.requests if r.method == "GET"]
    # The service received the id exactly, as one query value, on the API path.
    assert [(r.path, r.query) for r in polls] == [(API_PATH, {"generation_id": odd_id})] * 2


@pytest.mark.parametrize(
    "bad_id",
    [
        pytest.param("gen with spaces", id="spaces"),
        pytest.param("gen_1\r\nX-Injected: 1", id="crlf"),
        pytest.param("g" * 300, id="too-long"),
    ],
)
def test_an_unusable_id_after_a_paid_post_is_not_called_nothing_sent(
    emulator: KlingEmulator, bad_id: str
) -> None:
    emulator.queue_ids(bad_id)
    with pytest.raises(KlingUnusableIdError) as info:
        hook_for("kling_default").submit_generation(REQUEST)
    text = str(info.value)
    assert not isinstance(info.value, KlingValidationError)
    assert "nothing was sent" not in text
    assert repr(bad_id)[:60] in text  # names the id
    assert "may be billed" in text
    assert post_may_have_created(info.value)  # the operator fails without Airflow's retries
    assert emulator.count("POST") == 1
    assert emulator.count("GET") == 0


# ------------------------------------------------------------ #16 no exception escapes the trigger
async def test_odd_field_types_end_in_one_event(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [
        {"id": "gen_1", "status": 2, "video": {"url": {"x": 1}, "file_name": 7}},
        {"id": ["gen_1"], "status": "succeed", "video": [{"url": {"nested": True}}], "meta": "usage"},
    ]
    hostile.answer = lambda h: send(h, 200, answers.pop(0) if answers else pending())
    use(monkeypatch, "kling_hostile", host=hostile.base_url, password=API_KEY)
    trigger = KlingGenerationTrigger("gen_1", "kling_hostile", poll_interval=0.05, end_time=time.time() + 60)
    payload = await first_event(trigger)
    assert payload["status"] == "success"
    assert payload["generation"]["video_url"] is None  # the operator refuses a completed run without a URL


async def test_a_deeply_nested_answer_ends_in_one_error_event(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # json.loads raises RecursionError, not ValueError, on this 200 answer.
    hostile.answer = lambda h: send(h, 200, b"[" * 200_000 + b"]" * 200_000)
    use(monkeypatch, "kling_hostile", host=hostile.base_url, password=API_KEY)
    trigger = KlingGenerationTrigger("gen_1", "kling_hostile", end_time=time.time() + 60, max_attempts=1)
    payload = await first_event(trigger)
    assert payload["status"] == "error"
    assert "not a JSON object" in payload["message"]


async def test_a_connection_the_triggerer_cannot_see_is_a_retryable_event() -> None:
    """Issue 11 #1: the message a user sees when the triggerer cannot read the connection."""
    trigger = KlingGenerationTrigger(
        "gen_paid_123", "kling_only_in_the_metadata_db", end_time=time.time() + 60
    )
    payload = await first_event(trigger)
    print("issue 11 #1 message:", payload["message"])
    assert payload["status"] == "error"
    assert payload["retryable"] is True
    assert payload["generation_id"] == "gen_paid_123"
    assert payload["message"] == (
        "connection 'kling_only_in_the_metadata_db' is not visible to the triggerer (e.g. under "
        "`airflow dags test` with a connection stored only in the metadata DB); define it in an "
        "environment variable or a secrets backend the triggerer reads, then clear the task: the retry "
        "reconnects to generation gen_paid_123 and does not pay again"
    )


async def test_invalid_trigger_arguments_end_in_one_event(emulator: KlingEmulator) -> None:
    for trigger in (
        KlingGenerationTrigger("gen 1", end_time=time.time() + 60),
        KlingGenerationTrigger("gen_1", end_time=time.time() + 60, api="bogus"),
    ):
        payload = await first_event(trigger)
        assert payload["status"] == "error"
        assert payload["retryable"] is False
    assert emulator.requests == []


# ------------------------------------------------------------------- #17 ~/.netrc never replaces the key
def test_a_netrc_entry_never_replaces_the_key_nor_reaches_the_video_host(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    hostile.answer = lambda h: send(
        h, 200, b"clip" if h.path.startswith("/v.mp4") else json.dumps(pending()).encode()
    )
    use(monkeypatch, "kling_hostile", host=hostile.base_url, password=API_KEY)
    with hook_for("kling_hostile") as hook:
        hook.get_generation("gen_1")
        hook.download_video(f"{hostile.base_url}/v.mp4", tmp_path / "v.mp4")
    api, video = hostile.seen
    assert api.headers["Authorization"] == f"Bearer {API_KEY}"
    assert "Authorization" not in video.headers


# ---------------------------------------------------------------- TLS: not retried, nothing sent
def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


class _AcceptCounter:
    """A TCP server on 127.0.0.1 that counts connections; each is handed to ``serve`` in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.accepted = 0
        self._serve = serve
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self._sock.close()


@pytest.fixture
def bad_certificate_server(tmp_path: Path) -> Iterator[_AcceptCounter]:
    context = _self_signed(tmp_path)

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError), context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1024)

    server = _AcceptCounter(serve)
    yield server
    server.close()


def test_certificate_errors_are_not_retried_and_send_nothing(
    bad_certificate_server: _AcceptCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, "kling_tls", host=f"https://127.0.0.1:{bad_certificate_server.port}", password=API_KEY)
    hook = hook_for("kling_tls", max_attempts=4)
    with pytest.raises(KlingTLSError, match="certificate verify failed") as info:
        hook.submit_generation(REQUEST)
    assert info.value.nothing_sent
    assert not post_may_have_created(info.value)
    with pytest.raises(KlingTLSError):
        hook.get_generation("gen_1")
    with pytest.raises(KlingTLSError):
        asyncio.run(hook.aget_generation("gen_1"))
    assert bad_certificate_server.accepted == 3  # one handshake per call: none was retried


def test_scheme_less_host_to_the_emulator_says_what_to_write(
    emulator: KlingEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 #2: the message a user sees for ``127.0.0.1:PORT`` (no scheme) and an http emulator."""
    netloc = emulator.base_url.removeprefix("http://")
    use(monkeypatch, "kling_no_scheme", host=netloc, password=API_KEY)
    hook = hook_for("kling_no_scheme", max_attempts=3)
    with pytest.raises(KlingTLSError) as info:
        hook.submit_generation(REQUEST)
    print("issue 11 #2 message:", info.value)
    text = str(info.value)
    assert f"assumed https:// for host '{netloc}'" in text
    assert f"for a local emulator use http://{netloc}" in text
    assert "nothing was sent" in text
    assert not post_may_have_created(info.value)  # the operator may retry: nothing was paid
    with pytest.raises(KlingTLSError, match="assumed https://"):
        asyncio.run(hook.aget_generation("gen_1"))
    assert emulator.requests == []


def test_scheme_less_host_whose_handshake_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real TLS failure without an http server behind it: the peer closes during the handshake.
    server = _AcceptCounter(lambda conn: conn.close())
    try:
        use(monkeypatch, "kling_no_scheme", host=f"127.0.0.1:{server.port}", password=API_KEY)
        hook = hook_for("kling_no_scheme", max_attempts=3)
        with pytest.raises(KlingConnectionError) as info:
            hook.submit_generation(REQUEST)
        assert info.value.nothing_sent
        assert not post_may_have_created(info.value)
        assert f"assumed https:// for host '127.0.0.1:{server.port}'" in str(info.value)
    finally:
        server.close()


# ----------------------------------------------------------------- issue 11 #4: errors name the connection
def test_refused_keys_name_the_connection(emulator: KlingEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, "kling_rotated_key", host=emulator.base_url, password="an-old-key")
    with pytest.raises(KlingAuthError) as refused:
        hook_for("kling_rotated_key").submit_generation(REQUEST)
    print("issue 11 #4 (401) message:", refused.value)
    assert "The API key of connection 'kling_rotated_key' was refused" in str(refused.value)
    assert refused.value.message == "Invalid API key"

    emulator.inject("403", method="POST")
    with pytest.raises(KlingForbiddenError) as forbidden:
        hook_for("kling_default").submit_generation(REQUEST)
    print("issue 11 #4 (403) message:", forbidden.value)
    assert "The API key of connection 'kling_default' was refused for this call" in str(forbidden.value)
    assert "an-old-key" not in str(refused.value)


def test_a_host_holding_the_endpoint_path_is_explained(
    emulator: KlingEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, "kling_full_url", host=emulator.base_url + API_PATH, password=API_KEY)
    hook = hook_for("kling_full_url")
    with pytest.raises(KlingNotFoundError) as info:
        hook.submit_generation(REQUEST)
    print("issue 11 #4 (404) message:", info.value)
    assert "The host of connection 'kling_full_url' must be the base URL only" in str(info.value)
    assert "not the endpoint path" in str(info.value)
    ok, message = hook.test_connection()
    assert not ok
    assert "must be the base URL only" in message
    # A 404 for an unknown id on a plain base URL stays what it is.
    with pytest.raises(KlingNotFoundError) as unknown:
        hook_for("kling_default").get_generation("gen_unknown")
    assert unknown.value.hint is None


# ------------------------------------------------------------------------- secrets masking, once
def test_a_key_is_registered_with_the_masker_once_per_process(
    emulator: KlingEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow.providers.common.compat.sdk as compat_sdk

    registered: list[str] = []
    monkeypatch.setattr(
        compat_sdk, "mask_secret", lambda secret, name=None: registered.append(secret), raising=False
    )
    try:
        import airflow.sdk.log as sdk_log
    except ImportError:  # Airflow 2: the async path registers through the sync one
        pass
    else:

        async def amask(secret: str, name: str | None = None) -> None:
            registered.append(secret)

        monkeypatch.setattr(sdk_log, "amask_secret", amask, raising=False)  # 3.3+ only
    key = f"once-per-process-{os.getpid()}-{time.monotonic_ns()}"
    use(monkeypatch, "kling_once", host=emulator.base_url, password=key)

    async def async_hooks() -> None:
        for _ in range(3):
            await KlingHook("kling_once").aendpoint()

    for _ in range(5):
        assert KlingHook("kling_once").endpoint.api_key == key
    asyncio.run(async_hooks())
    # (Airflow registers other parts of a connection itself, e.g. its extra: not counted here.)
    assert [s for s in registered if s == key] == [key]

    other = key + "-rotated"
    use(monkeypatch, "kling_once", host=emulator.base_url, password=other)
    KlingHook("kling_once").endpoint  # noqa: B018
    KlingHook("kling_once").endpoint  # noqa: B018
    assert [s for s in registered if s in (key, other)] == [key, other]


_LOG_SCRIPT = """
import logging, sys
from airflow.sdk.log import configure_logging
configure_logging(output=sys.stdout, colored_console_log=False)
from airflow_provider_kling.hooks.kling import KlingHook
hook = KlingHook("kling_logged")
key = hook.endpoint.api_key
hook.log.info("hook line with the key %s inside", key)
logging.getLogger("airflow.task").info("task line with the key %s inside", key)
print("done", flush=True)
"""


@pytest.mark.airflow3
@pytest.mark.airflow31  # airflow.sdk.log.configure_logging(output=, colored_console=) is 3.1's
def test_a_logged_key_comes_out_redacted(emulator: KlingEmulator) -> None:
    env = {
        **os.environ,
        "AIRFLOW_CONN_KLING_LOGGED": connection_json(host=emulator.base_url, password="logged-key-0b5e1d"),
    }
    out = subprocess.run(
        [sys.executable, "-c", _LOG_SCRIPT], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    text = out.stdout + out.stderr
    assert "hook line with the key *** inside" in text
    assert "task line with the key *** inside" in text
    assert "logged-key-0b5e1d" not in text


# ------------------------------------------------------------------------------ statuses and dates
def test_unknown_status_means_pending_through_the_hook_and_the_trigger(emulator: KlingEmulator) -> None:
    hook = hook_for("kling_default")
    generation_id = hook.submit_generation(REQUEST)
    emulator.script(method="GET", body={"id": generation_id, "status": "rendering-v9"}, times=3)

    polled = hook.get_generation(generation_id)
    assert (polled.status, polled.raw_status) == (GenerationStatus.PENDING, "rendering-v9")

    emulator.complete(generation_id)
    trigger = KlingGenerationTrigger(generation_id, poll_interval=0.05, end_time=time.time() + 60)
    payload = asyncio.run(first_event(trigger))
    assert payload["status"] == "success"
    # Two more unknown answers were waited through, then the real (completed) one came.
    assert emulator.count("GET") == 4


def test_succeed_is_completed_through_the_hook_and_the_trigger(emulator: KlingEmulator) -> None:
    video = {"url": "https://cdn.example/v.mp4?sig=1"}
    emulator.script(method="GET", body={"id": "gen_native", "status": "succeed", "video": [video]}, times=2)
    generation = hook_for("kling_default").get_generation("gen_native")
    assert generation.status is GenerationStatus.COMPLETED
    assert generation.video_url == video["url"]
    payload = asyncio.run(first_event(KlingGenerationTrigger("gen_native", end_time=time.time() + 60)))
    assert payload["status"] == "success"


def test_a_naive_http_date_retry_after_is_read_as_utc(
    emulator: KlingEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30)
    naive = soon.strftime("%a, %d %b %Y %H:%M:%S")  # no zone at all
    hook = hook_for("kling_default", max_attempts=1)
    for zone in ("Pacific/Honolulu", "Asia/Tokyo", "UTC"):
        emulator.script(method="GET", status=429, body={"message": "busy"}, headers={"Retry-After": naive})
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        try:
            with pytest.raises(KlingRateLimitError) as info:
                hook.get_generation("gen_busy")
        finally:
            monkeypatch.delenv("TZ")
            time.tzset()
        wait = info.value.retry_after
        assert wait is not None
        assert 0 < wait <= 31, (zone, wait)


# ------------------------------------------------------------------------------------ hook lifecycle
def test_the_hook_closes_its_session(emulator: KlingEmulator) -> None:
    with hook_for("kling_default") as hook:
        hook.get_generation(hook.submit_generation(REQUEST))
        session = hook.session
        pools = session.get_adapter(emulator.base_url).poolmanager.pools
        assert len(pools) == 1
    assert len(pools) == 0  # closed on exit
    assert "session" not in vars(hook)
    hook.close()  # twice is fine
