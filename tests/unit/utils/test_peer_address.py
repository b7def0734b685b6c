"""The address policy is checked on the address each connection actually reaches (DNS rebinding).

A host name whose DNS answer changes between the provider's check and the connection is refused
before any byte of the request is sent. The name's answers are scripted by replacing the standard
library's ``socket.getaddrinfo`` (the provider's classes are untouched); a listening socket of the
test's own records every connection and every byte it receives, so "nothing was sent" is observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import threading
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kling.exceptions import KlingConfigError, KlingDownloadError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.utils.urls import check_api_peer, check_download_peer
from tests.support.connections import API_KEY, connection_json

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SIGNATURE = "X-Amz-Signature=5ec7e7516a7e"
#: A public address a first DNS answer may give (never connected to: the second answer is used).
PUBLIC = "8.8.8.8"


class Listener:
    """A TCP socket on ``host`` that accepts connections and records the bytes each one sends first."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.received: list[bytes] = []
        self._last = -1
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            conn, peer = self.sock.accept()
            with conn:
                if peer[1] == self._last:  # the closing connection of close(): all earlier ones are in
                    return
                conn.settimeout(10)
                try:
                    self.received.append(conn.recv(65536))  # b"" when the client closed unsent
                except OSError:
                    self.received.append(b"")

    def close(self) -> list[bytes]:
        """Stop listening; what each accepted connection sent first (in the order they came)."""
        if self._thread.is_alive():
            # One last connection of our own, queued behind any the client made: once the server
            # reaches it, every earlier one has been read.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as last:
                last.bind((self.sock.getsockname()[0], 0))
                self._last = int(last.getsockname()[1])
                last.connect(self.sock.getsockname())
                self._thread.join(30)
        self.sock.close()
        return self.received


@contextlib.contextmanager
def listening(host: str) -> Iterator[Listener]:
    listener = Listener(host)
    try:
        yield listener
    finally:
        listener.close()


def rebinding(monkeypatch: pytest.MonkeyPatch, name: str, answers: list[str]) -> list[str]:
    """Make ``name`` resolve to ``answers`` in turn (the last one from then on); returns the answers given."""
    real = socket.getaddrinfo
    given: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, port, *args, **kwargs)
        address = answers[min(len(given), len(answers) - 1)]
        given.append(address)
        return real(address, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return given


def private_address() -> str:
    """This machine's own non-loopback, non-public IPv4 address (the test listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # no packet is sent: only the route is looked up
        except OSError:
            pytest.skip("no IPv4 route on this machine")
        address = str(probe.getsockname()[0])
    parsed = ipaddress.ip_address(address)
    if parsed.is_loopback or parsed.is_global:
        pytest.skip(f"this machine's address {address} is not a private one")
    return address


def use(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> KlingHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(**fields))
    return KlingHook(conn_id, max_attempts=1, retry_min_wait=0.01, retry_max_wait=0.05)


# ------------------------------------------------------------------------------------- the policy
def test_the_download_policy_judges_the_connected_address() -> None:
    url = f"https://videos.example.com/v.mp4?{SIGNATURE}"
    check_download_peer(url, PUBLIC)
    check_download_peer(url, "127.0.0.1", allow_loopback=True)
    with pytest.raises(KlingDownloadError, match=r"resolves to 10\.0\.0\.7, a private address") as info:
        check_download_peer(url, "10.0.0.7", allow_loopback=True)
    assert SIGNATURE not in str(info.value)
    with pytest.raises(KlingDownloadError, match=r"loopback address; .*allow_loopback_downloads"):
        check_download_peer(url, "127.0.0.1")
    with pytest.raises(KlingDownloadError, match="plain http"):
        check_download_peer("http://videos.example.com/v.mp4", PUBLIC)


def test_the_api_policy_keeps_plain_http_on_loopback_addresses() -> None:
    check_api_peer("http://localhost:8642", "127.0.0.1")
    check_api_peer("http://localhost:8642", "::1")
    check_api_peer("https://api.example.com", "10.0.0.7")  # https is not limited
    with pytest.raises(KlingConfigError, match=r"uses plain http, but localhost resolves to 10\.0\.0\.7"):
        check_api_peer("http://localhost:8642", "10.0.0.7")


# ------------------------------------------------------------------------------- sync download path
def test_a_video_host_rebound_to_loopback_after_the_check_is_refused_before_sending(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hook = use(monkeypatch, "kling_rebind", password=API_KEY, allow_loopback_downloads=False)
    given = rebinding(monkeypatch, "video.rebind.test", [PUBLIC, "127.0.0.1"])
    with listening("127.0.0.1") as listener:
        url = f"https://video.rebind.test:{listener.port}/v.mp4?{SIGNATURE}"
        with pytest.raises(KlingDownloadError, match=r"resolves to 127\.0\.0\.1, a loopback address") as info:
            hook.download_video(url, tmp_path, attempts=1)
    assert given[:2] == [PUBLIC, "127.0.0.1"]  # checked on the first answer, connected on the second
    assert listener.received == [b""]  # connected, and closed before the TLS hello or the request
    assert SIGNATURE not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_hop_rebound_to_a_private_address_is_refused_before_sending(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    private = private_address()
    hook = use(monkeypatch, "kling_rebind_hop", password=API_KEY, allow_loopback_downloads=True)
    given = rebinding(monkeypatch, "hop.rebind.test", ["127.0.0.1", private])
    with listening(private) as listener:
        hop = f"http://hop.rebind.test:{listener.port}/v.mp4"
        url = f"{emulator.base_url}/_emulator/redirect?to={hop}"
        with pytest.raises(KlingDownloadError, match=f"resolves to {re.escape(private)}, a private address"):
            hook.download_video(url, tmp_path, attempts=1)
    assert given[:2] == ["127.0.0.1", private]
    assert listener.received == [b""]
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- the API paths
@pytest.fixture
def localhost_elsewhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KlingHook, Listener]]:
    """A plain-http connection to ``localhost``, whose name resolves to a private address."""
    private = private_address()
    with listening(private) as listener:
        hook = use(monkeypatch, "kling_localhost", host=f"http://localhost:{listener.port}", password=API_KEY)
        hook.endpoint  # noqa: B018  (the connection is read, and passes the check by name)
        rebinding(monkeypatch, "localhost", [private])
        yield hook, listener


def test_the_async_path_never_connects_plain_http_to_a_localhost_that_is_not_loopback(
    localhost_elsewhere: tuple[KlingHook, Listener],
) -> None:
    hook, listener = localhost_elsewhere
    with pytest.raises(KlingConfigError, match="uses plain http, but localhost resolves to") as info:
        asyncio.run(hook.aget_generation("gen_1"))
    assert API_KEY not in str(info.value)
    assert listener.close() == []  # nothing connected at all: the resolver answered no address


def test_the_sync_path_never_sends_plain_http_to_a_localhost_that_is_not_loopback(
    localhost_elsewhere: tuple[KlingHook, Listener],
) -> None:
    hook, listener = localhost_elsewhere
    with pytest.raises(KlingConfigError, match="uses plain http, but localhost resolves to") as info:
        hook.get_generation("gen_1")
    assert API_KEY not in str(info.value)
    assert listener.close() == [b""]  # connected, and closed before the request (and its key)
