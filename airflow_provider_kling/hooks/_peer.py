"""Connections that check the address they actually reach, for requests and for aiohttp.

The address policy itself lives in :mod:`airflow_provider_kling.utils.urls`; this module only makes
both HTTP clients apply it to the address connected to, so a DNS answer that changes between a
check and the connection (rebinding) is refused before any byte of the request is sent:

- requests: :class:`PeerCheckingAdapter` (mount it on a Session) checks ``getpeername()`` of every
  new socket right after the TCP connect (before TLS), and of a kept-alive socket before it is
  reused, for every request and so for every redirect hop;
- aiohttp: :func:`peer_checking_resolver` keeps only the resolved addresses the policy allows, so
  aiohttp never connects to another (an IP literal host is not resolved and is checked by name).

Which policy applies is set per call with :func:`checking_peer` (a context variable: each thread
and each task has its own); outside such a block nothing is checked. Through a proxy the socket
reaches the proxy, not the host: proxied pools are urllib3's own and the check before connecting
is all there is, as before.
"""

from __future__ import annotations

import contextvars
import functools
import socket
from typing import TYPE_CHECKING, Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from airflow_provider_kling.exceptions import KlingError

if TYPE_CHECKING:
    from collections.abc import Callable

_PEER_CHECK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "kling_peer_check", default=None
)


class checking_peer:  # lower case: named for its use, ``with checking_peer(check):``
    """Apply ``check`` to the address of every connection made or reused while the block runs.

    A class rather than a generator-based context manager: one object per call, as every poll of
    every trigger enters one.

    :param check: called with the peer address; raises to refuse it (None: no check).
    """

    __slots__ = ("_check", "_token")

    def __init__(self, check: Callable[[str], None] | None) -> None:
        self._check = check

    def __enter__(self) -> None:
        self._token = _PEER_CHECK.set(self._check)

    def __exit__(self, *exc_info: object) -> None:
        _PEER_CHECK.reset(self._token)


def _check_socket(sock: socket.socket) -> None:
    check = _PEER_CHECK.get()
    if check is not None:
        check(str(sock.getpeername()[0]))


class _PeerChecked:
    """Mixed into urllib3's connections: the peer is checked after connecting and before each request."""

    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        try:
            _check_socket(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # a kept-alive socket, connected under another call's check
            _check_socket(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _CheckedHTTPConnection(_PeerChecked, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_PeerChecked, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class PeerCheckingAdapter(HTTPAdapter):
    """A requests transport adapter whose direct connections check the address they reach.

    Mount it for ``http://`` and ``https://``; the check of the innermost :func:`checking_peer`
    block applies.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}


def mount_peer_check(session: Any) -> None:
    """Make ``session`` (a requests.Session) check the address of every connection it makes.

    :param session: the session to mount :class:`PeerCheckingAdapter` on.
    """
    for prefix in ("http://", "https://"):
        session.mount(prefix, PeerCheckingAdapter())


@functools.cache
def _resolver_class() -> type[Any]:
    from aiohttp.resolver import DefaultResolver

    class PeerCheckingResolver(DefaultResolver):  # type: ignore[misc,valid-type]
        """aiohttp's resolver, answering only the addresses the current check allows."""

        async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[Any]:
            hosts = await super().resolve(host, port, family)
            check = _PEER_CHECK.get()
            if check is None:
                return list(hosts)
            allowed, refusal = [], None
            for entry in hosts:
                try:
                    check(str(entry["host"]))
                except KlingError as exc:
                    refusal = refusal or exc
                else:
                    allowed.append(entry)
            if refusal is not None and not allowed:
                raise refusal
            return allowed

    return PeerCheckingResolver


def peer_checking_resolver() -> Any:
    """An aiohttp resolver (aiohttp's default one) that drops the addresses the current check refuses.

    When it refuses every address, the check's own error is raised and nothing is connected. Made
    on the running event loop (pass it to ``aiohttp.TCPConnector(resolver=...)``).
    """
    return _resolver_class()()


__all__ = ["PeerCheckingAdapter", "checking_peer", "mount_peer_check", "peer_checking_resolver"]
