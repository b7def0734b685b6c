"""Sync (requests) and async (aiohttp) transports: one API attempt each, and the async session pool.

Both bound an attempt by a wall-clock budget and an answer by MAX_RESPONSE_BYTES through one
shared step (:func:`_check_announced`, then :func:`_capped`, then the answer-to-error mapping of
:mod:`._errors`). Each library's own exceptions are translated apart: they have no common base.
aiohttp is imported only when the async path runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
import urllib3.exceptions

from airflow_provider_kling.exceptions import KlingConnectionError, KlingResponseTooLarge
from airflow_provider_kling.hooks._connection import _BearerAuth, _user_agent
from airflow_provider_kling.hooks._errors import _connection_error, _is_refused, _read_response, _tls_error
from airflow_provider_kling.hooks._peer import checking_peer, peer_checking_resolver
from airflow_provider_kling.utils.urls import check_api_peer, netloc_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    import aiohttp

    from airflow_provider_kling.hooks._connection import _Endpoint

#: Most bytes of one API answer the hook reads; a longer answer is an error (never held in memory).
MAX_RESPONSE_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024
_READ_PIECE = 64 * 1024

# One aiohttp ClientSession per (event loop, connection id), shared by every trigger on that loop.
# Settings that differ per trigger (timeouts) travel with each request, never with the session.
_ASYNC_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, HeldSession]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class Attempt:
    """One API attempt: where it goes and how long it may take.

    :param endpoint: where to call and with what key.
    :param method: the HTTP method.
    :param path: the path on the endpoint (also named in errors).
    :param budget: wall-clock seconds for the attempt, connect to last byte.
    :param timeout: the hook's (connect, read) timeouts; each is cut to ``budget``.
    """

    endpoint: _Endpoint
    method: str
    path: str
    budget: float
    timeout: tuple[float, float]

    @property
    def url(self) -> str:
        return self.endpoint.base_url + self.path

    @property
    def socket_timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds, each at most the budget."""
        return min(self.timeout[0], self.budget), min(self.timeout[1], self.budget)


@functools.lru_cache(maxsize=32)
def _api_peer_check(base_url: str) -> Callable[[str], None]:
    """The peer-address check of calls to ``base_url``: one object for all of them, not one per poll."""
    return functools.partial(check_api_peer, base_url)


@functools.lru_cache(maxsize=32)
def _client_timeout(budget: float, connect: float, read: float) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts of an attempt; the same for every poll whose deadline does not cut them."""
    import aiohttp

    return aiohttp.ClientTimeout(total=budget, sock_connect=connect, sock_read=read)


class _CallTimedOut(Exception):
    """One HTTP attempt outlived its wall-clock budget (headers to last byte)."""


def _too_large(method: str, path: str, status: int, size: int | str) -> KlingResponseTooLarge:
    return KlingResponseTooLarge(
        status,
        f"answered a body of {size} bytes, more than the {MAX_RESPONSE_BYTES} bytes an API answer may "
        "have; it was not read",
        method=method,
        path=path,
    )


def _read_sync(resp: requests.Response, deadline: float, limit: int) -> bytes:
    """Read at most ``limit + 1`` bytes of an answer, giving up at ``deadline`` (monotonic)."""
    body = bytearray()
    for piece in _iter_body(resp, deadline, _READ_PIECE):
        body += piece
        if len(body) > limit:
            break
    return bytes(body)


def _iter_body(resp: requests.Response, deadline: float, size: int = _CHUNK) -> Iterator[bytes]:
    """The (decoded) body in pieces as they arrive, raising :class:`_CallTimedOut` at ``deadline``.

    ``read1`` returns after one read from the socket, so a server sending a byte at a time cannot
    hold the loop in one big read past the deadline (each read is bounded by the read timeout).
    """
    raw = resp.raw
    read1 = getattr(raw, "read1", None)
    while True:
        if time.monotonic() > deadline:
            raise _CallTimedOut()
        if read1 is not None:
            piece = read1(size, decode_content=True)
        else:  # urllib3 1.x
            piece = raw.read(min(size, 8192), decode_content=True)
        if not piece:
            if time.monotonic() > deadline:
                raise _CallTimedOut()
            return
        yield piece


def _check_announced(method: str, path: str, status: int, headers: Any) -> None:
    """A 2xx answer that announces more than MAX_RESPONSE_BYTES is refused before it is read."""
    announced = headers.get("Content-Length", "")
    if 200 <= status < 300 and announced.isdigit() and int(announced) > MAX_RESPONSE_BYTES:
        raise _too_large(method, path, status, announced)


def _capped(method: str, path: str, status: int, body: bytes) -> bytes:
    """A body read up to MAX_RESPONSE_BYTES + 1: too long is an error for a 2xx, else it is cut."""
    if len(body) > MAX_RESPONSE_BYTES:
        if 200 <= status < 300:
            raise _too_large(method, path, status, f"more than {MAX_RESPONSE_BYTES}")
        body = body[:MAX_RESPONSE_BYTES]
    return body


def send(
    session: requests.Session,
    attempt: Attempt,
    extra_headers: dict[str, str] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """One API attempt on the sync path: at most its budget in seconds and MAX_RESPONSE_BYTES.

    :param session: the hook's requests.Session.
    :param attempt: where to call and how long it may take.
    :param extra_headers: headers of this call only (``X-Client-Request-Id``).
    :param kw: passed to ``session.request`` (``params``, ``json``).
    :return: the answer's JSON object.
    """
    started = time.monotonic()
    endpoint, method, path, budget = attempt.endpoint, attempt.method, attempt.path, attempt.budget
    try:
        with checking_peer(_api_peer_check(endpoint.base_url)):
            resp = session.request(
                method,
                attempt.url,
                headers={**endpoint.headers, **extra_headers} if extra_headers else endpoint.headers,
                auth=_BearerAuth(endpoint.api_key),
                timeout=attempt.socket_timeouts,
                allow_redirects=False,
                stream=True,
                **kw,
            )
    except requests.exceptions.SSLError as exc:
        raise _tls_error(exc, endpoint, netloc_of(attempt.url)) from None
    except (requests.exceptions.ConnectTimeout, requests.exceptions.ConnectionError) as exc:
        refused = isinstance(exc, requests.exceptions.ConnectTimeout) or _is_refused(exc)
        raise _connection_error(exc, f"could not reach {endpoint.base_url}", nothing_sent=refused) from None
    except requests.exceptions.RequestException as exc:
        raise _connection_error(exc, f"no answer from {endpoint.base_url}", nothing_sent=False) from None
    with resp:
        _check_announced(method, path, resp.status_code, resp.headers)
        try:
            body = _read_sync(resp, started + budget, MAX_RESPONSE_BYTES)
        except _CallTimedOut:
            raise KlingConnectionError(
                f"no complete answer from {endpoint.base_url} within {budget:.1f} s "
                "(the call's wall-clock bound)",
                nothing_sent=False,
            ) from None
        except (OSError, requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise _connection_error(exc, f"no answer from {endpoint.base_url}", nothing_sent=False) from None
        body = _capped(method, path, resp.status_code, body)
        return _read_response(method, path, resp.status_code, body, resp.headers, endpoint)


async def asend(
    session: aiohttp.ClientSession, attempt: Attempt, params: dict[str, str] | None = None
) -> dict[str, Any]:
    """One API attempt on the async path: at most its budget in seconds and MAX_RESPONSE_BYTES.

    :param session: the event loop's shared aiohttp session (see :func:`shared_session`).
    :param attempt: where to call and how long it may take.
    :param params: the query parameters.
    :return: the answer's JSON object.
    """
    import aiohttp

    endpoint, method, path, budget = attempt.endpoint, attempt.method, attempt.path, attempt.budget
    connect_timeout, read_timeout = attempt.socket_timeouts
    try:
        with checking_peer(_api_peer_check(endpoint.base_url)):
            resp = await session.request(
                method,
                attempt.url,
                params=params,
                headers=endpoint.auth_headers,
                timeout=_client_timeout(budget, connect_timeout, read_timeout),
                allow_redirects=False,
            )
        async with resp:
            status, headers = resp.status, resp.headers
            _check_announced(method, path, status, headers)
            received = bytearray()
            while len(received) <= MAX_RESPONSE_BYTES:
                piece = await resp.content.read(_READ_PIECE)
                if not piece:
                    break
                received += piece
            body = _capped(method, path, status, bytes(received))
    except aiohttp.ClientSSLError as exc:
        raise _tls_error(exc, endpoint, netloc_of(attempt.url)) from None
    except aiohttp.ClientConnectorError as exc:
        raise _connection_error(exc, f"could not reach {endpoint.base_url}", nothing_sent=True) from None
    except asyncio.TimeoutError as exc:
        raise KlingConnectionError(
            f"no complete answer from {endpoint.base_url} within its timeouts (read "
            f"{read_timeout:.1f} s, whole call {budget:.1f} s): "
            f"{type(exc).__name__}",
            nothing_sent=False,
        ) from None
    except aiohttp.ClientError as exc:
        raise _connection_error(exc, f"no answer from {endpoint.base_url}", nothing_sent=False) from None
    return _read_response(method, path, status, body, headers, endpoint)


@dataclass
class HeldSession:
    """An aiohttp session and how many blocks hold it: the last to leave lets it go."""

    session: aiohttp.ClientSession
    holders: int = 0


@contextlib.asynccontextmanager
async def shared_session(conn_id: str, pool_limit: int) -> AsyncIterator[aiohttp.ClientSession]:
    """Hold the event loop's shared aiohttp session for ``conn_id`` while the block runs.

    The session closes when its last holder leaves. It carries no timeouts: each request carries
    its own hook's (see :func:`asend`).

    :param conn_id: the connection the session serves.
    :param pool_limit: most sockets the session keeps open (used when it is created).
    """
    loop = asyncio.get_running_loop()
    per_loop = _ASYNC_SESSIONS.setdefault(loop, {})
    entry = per_loop.get(conn_id)
    if entry is None or entry.session.closed:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=pool_limit, keepalive_timeout=30, resolver=peer_checking_resolver()
            ),
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": _user_agent()},
            trust_env=False,
        )
        entry = per_loop[conn_id] = HeldSession(session)
    entry.holders += 1
    try:
        yield entry.session
    finally:
        entry.holders -= 1
        if entry.holders == 0:
            if per_loop.get(conn_id) is entry:
                del per_loop[conn_id]
            await entry.session.close()


def shared_session_in_use(conn_id: str) -> tuple[aiohttp.ClientSession, int] | None:
    """The running event loop's shared session for ``conn_id`` and how many hold it, or None.

    What a triggerer shares between its triggers, for diagnostics and tests (one session per
    connection on a loop, closed by the last holder).

    :param conn_id: the connection the session serves.
    """
    entry = _ASYNC_SESSIONS.get(asyncio.get_running_loop(), {}).get(conn_id)
    return (entry.session, entry.holders) if entry is not None else None


__all__ = ["MAX_RESPONSE_BYTES", "HeldSession", "asend", "send", "shared_session", "shared_session_in_use"]
