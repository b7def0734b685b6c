"""Hook for the Kling image-to-video API (Apilaplas).

The sync path (requests) serves operators and sensors in poke mode; the async path (aiohttp) serves
triggers. Both share everything but the transport: URL and key resolution, error mapping, retry
rules and response parsing live once, below.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import time
import unicodedata
import uuid
import weakref
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import requests
import requests.auth
import urllib3.exceptions
from airflow.providers.common.compat.sdk import BaseHook
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from airflow_provider_kling.catalog import DEFAULT_ENDPOINT, ENDPOINT_PATHS
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingConfigError,
    KlingConnectionError,
    KlingDeadlineExceeded,
    KlingDownloadError,
    KlingError,
    KlingForbiddenError,
    KlingGenerationFailed,
    KlingGenerationTimeout,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingResponseTooLarge,
    KlingServerError,
    KlingTLSError,
    KlingUnusableIdError,
    KlingValidationError,
    redact_urls,
)
from airflow_provider_kling.models import (
    Generation,
    GenerationStatus,
    KlingRequest,
    build_request,
    resolve_file_inputs,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import aiohttp

DEFAULT_BASE_URL = "https://api.apilaplas.com"
#: The seed's (legacy) generation path; the connection's ``endpoint`` extra may pick the unified one.
GENERATION_PATH = ENDPOINT_PATHS["legacy"]
#: Longest Retry-After the hook will sleep for; a longer one is capped to this.
MAX_RETRY_AFTER = 300.0
#: Most bytes of one API answer the hook reads; a longer answer is an error (never held in memory).
MAX_RESPONSE_BYTES = 1024 * 1024
#: Longest generation id accepted (ids are otherwise opaque: the service's own text, URL-encoded).
MAX_ID_LENGTH = 256
#: Default wall-clock bound of one video download try, headers to last byte.
DOWNLOAD_TIMEOUT = 3600.0
#: The connection extra that lets downloads reach loopback hosts (and plain http to them): for the emulator.
ALLOW_LOOPBACK_DOWNLOADS = "allow_loopback_downloads"
#: The shortest time an attempt gets, even at (or past) a deadline, so a last poll can still answer.
_MIN_ATTEMPT_SECONDS = 1.0
_CHUNK = 1024 * 1024
#: Part size for uploads to object storage (S3's smallest multipart part is 5 MiB).
_WRITE_BLOCK = 8 * 1024 * 1024
_READ_PIECE = 64 * 1024
_MAX_REDIRECTS = 5
_ID_RULE = (
    "must be the id the service returned: non-empty text of at most "
    f"{MAX_ID_LENGTH} characters without spaces or control characters"
)
#: Hosts spelled as numbers in a form other than dotted-quad IPv4 (2130706433, 0177.0.0.1, 0x7f.1):
#: libc reads them as addresses, ``ipaddress`` does not; refused rather than guessed.
_NUMERIC_HOST_RE = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*$", re.IGNORECASE)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Endpoint:
    """Where to call and with what key; the key is kept out of repr.

    :param api: which of the service's endpoints new generations go to: ``legacy`` or ``unified``.
    :param host_text: the connection's host as written (for messages).
    :param assumed_https: the host had no scheme and https was assumed.
    :param allow_loopback_downloads: the connection allows video downloads from loopback hosts.
    """

    base_url: str
    api_key: str
    api: str = DEFAULT_ENDPOINT
    conn_id: str = "?"
    host_text: str = ""
    assumed_https: bool = False
    allow_loopback_downloads: bool = False

    def __repr__(self) -> str:
        return f"_Endpoint(base_url={self.base_url!r}, api={self.api!r}, api_key=***)"

    def path(self, api: str | None = None) -> str:
        """The generation path of ``api`` (default: the connection's endpoint)."""
        return ENDPOINT_PATHS[api or self.api]

    @property
    def headers(self) -> dict[str, str]:
        """Headers of an API call; the key itself travels through :class:`_BearerAuth`."""
        return {"Accept": "application/json"}

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}


class _BearerAuth(requests.auth.AuthBase):
    """The connection's key as requests auth: requests reads ``~/.netrc`` only when auth is None."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "_BearerAuth(***)"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._key}"
        return request


class _NoAuth(requests.auth.AuthBase):
    """No credentials at all (video hosts): also keeps a ``~/.netrc`` entry from being sent."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


def _is_loopback(host: str) -> bool:
    """True for ``localhost`` and for addresses ``ipaddress`` itself parses as loopback (strictly)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_problem(text: str) -> str | None:
    """Why a host (or URL) cannot be used as written, or None."""
    if "\\" in text:
        return "it contains a backslash"
    if any(ch.isspace() for ch in text):
        return "it contains whitespace"
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        return "it contains control characters"
    return None


def _netloc(hostname: str, port: int | None) -> str:
    host = f"[{hostname}]" if ":" in hostname else hostname
    return f"{host}:{port}" if port else host


_USERINFO_RE = re.compile(r"(^[^:/?#]*://)[^/?#]*@")


def _split_http_url(url: str, what: str) -> tuple[str, str, int | None, str]:
    """(scheme, hostname, port, path) of an http(s) URL, refusing every ambiguous spelling.

    :raises ValueError: with a readable reason.
    """
    shown = _USERINFO_RE.sub(r"\1***@", url)  # user information may hold a password: never shown
    problem = _host_problem(url)
    if problem:
        raise ValueError(f"{what} {shown!r} cannot be used: {problem}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {shown!r} is not an http(s) URL")
    if "@" in parts.netloc:
        raise ValueError(f"{what} {shown!r} cannot be used: it carries user information (user@host)")
    url = shown
    hostname = parts.hostname
    if hostname.endswith("."):
        raise ValueError(f"{what} {url!r} cannot be used: its host name ends in a dot")
    if _NUMERIC_HOST_RE.match(hostname):
        try:
            ipaddress.IPv4Address(hostname)
        except ValueError:
            raise ValueError(
                f"{what} {url!r} cannot be used: {hostname!r} is a number that is not a dotted-quad "
                "IPv4 address (write the address as four decimal numbers, e.g. 127.0.0.1)"
            ) from None
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} {url!r} cannot be used: its port is not a number from 1 to 65535") from None
    return scheme, hostname, port, parts.path


def endpoint_from_connection(conn: Any) -> _Endpoint:
    """Check a ``kling`` connection and turn it into the base URL and key to call with.

    The base URL is rebuilt from the parsed scheme, host name, port and path only: user information,
    backslashes, whitespace, control characters, a query or a fragment in the host are refused, so
    the host checked is the host connected to.

    :param conn: an Airflow Connection.
    :raises KlingConfigError: no key, a host that is not a URL, or plain http to a non-loopback host.
    """
    conn_id = getattr(conn, "conn_id", None) or "?"
    key = (conn.password or "").strip()
    if not key:
        raise KlingConfigError(
            f"Connection {conn_id!r} has no API key: put the Apilaplas key in its password field "
            "(labelled 'API Key')"
        )
    host_text = (conn.host or "").strip()
    host = host_text or DEFAULT_BASE_URL
    assumed_https = False
    if "://" not in host:
        assumed_https = not conn.schema
        host = f"{conn.schema or 'https'}://{host}"
    try:
        scheme, hostname, port, path = _split_http_url(host, "host")
    except ValueError as exc:
        raise KlingConfigError(
            f"Connection {conn_id!r}: {exc}; leave it empty for {DEFAULT_BASE_URL} or give a full URL "
            "such as https://api.example.com"
        ) from None
    parts = urlsplit(host)
    if parts.query or parts.fragment or host.rstrip("/").endswith(("?", "#")):
        raise KlingConfigError(
            f"Connection {conn_id!r}: host {host!r} has a query or a fragment; give the base URL only, "
            f"such as {DEFAULT_BASE_URL}"
        )
    if scheme == "http" and not _is_loopback(hostname):
        raise KlingConfigError(
            f"Connection {conn_id!r}: host {host!r} uses plain http; only https is allowed except "
            "to a loopback host (127.0.0.1, localhost, ::1), so the API key never crosses a network "
            "in clear"
        )
    if conn.port and not port:
        port = int(conn.port)
        host_text = f"{host_text}:{port}" if host_text else host_text
    base = f"{scheme}://{_netloc(hostname, port)}{path.rstrip('/')}"
    return _Endpoint(
        base_url=base,
        api_key=key,
        api=endpoint_choice(conn),
        conn_id=conn_id,
        host_text=host_text,
        assumed_https=assumed_https,
        allow_loopback_downloads=_extra(conn).get(ALLOW_LOOPBACK_DOWNLOADS) in (True, "true", "True", 1),
    )


def _extra(conn: Any) -> dict[str, Any]:
    try:
        extra = conn.extra_dejson or {}
    except Exception:  # a malformed extra: Airflow itself already logs it
        extra = {}
    return extra if isinstance(extra, dict) else {}


def endpoint_choice(conn: Any) -> str:
    """The connection's ``endpoint`` extra: ``legacy`` (the default) or ``unified``."""
    conn_id = getattr(conn, "conn_id", None) or "?"
    choice = str(_extra(conn).get("endpoint") or DEFAULT_ENDPOINT).strip().lower()
    if choice not in ENDPOINT_PATHS:
        raise KlingConfigError(
            f"Connection {conn_id!r}: endpoint {choice!r} is not one of {', '.join(ENDPOINT_PATHS)} "
            f"(legacy: {ENDPOINT_PATHS['legacy']}, unified: {ENDPOINT_PATHS['unified']})"
        )
    return choice


def check_api(api: Any) -> str | None:
    """Return ``api`` when it names one of the service's endpoints (or is None), else raise."""
    if api is None or api in ENDPOINT_PATHS:
        return api
    raise KlingValidationError([("api", f"must be one of {', '.join(ENDPOINT_PATHS)} or None, got {api!r}")])


def _id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a generation id, or None. Ids are opaque: anything printable goes."""
    if not isinstance(value, str):
        return f"got {type(value).__name__} {value!r}"
    if not value:
        return "got an empty id"
    if len(value) > MAX_ID_LENGTH:
        return f"got {len(value)} characters"
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        return f"got {value!r}, which holds spaces or control characters"
    if value in ("None", "null"):
        # What a template renders when its value is missing, e.g. an XCom that was never pushed.
        return f"got the text {value!r}"
    return None


def check_generation_id(generation_id: Any) -> str:
    """Return the id (outer whitespace removed) when it can be one the service hands out, else raise.

    Ids are opaque to the provider: any text of at most 256 characters without spaces or control
    characters, sent URL-encoded. Raised before anything is sent (:class:`KlingValidationError`).
    """
    value = generation_id.strip() if isinstance(generation_id, str) else generation_id
    problem = _id_problem(value)
    if problem:
        if problem.startswith("got the text"):
            rule = "must be an id as returned by the service"
        else:
            rule = _ID_RULE
        raise KlingValidationError([("generation_id", f"{rule}, {problem}")])
    return str(value)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP dates are always GMT (RFC 9110); one written without a zone is read as UTC, not local.
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


_ERRORS_BY_STATUS: dict[int, type[KlingAPIError]] = {
    400: KlingBadRequestError,
    401: KlingAuthError,
    403: KlingForbiddenError,
    404: KlingNotFoundError,
    429: KlingRateLimitError,
}


def _hint(status: int, method: str, endpoint: _Endpoint | None) -> str | None:
    """What to change in the connection for an answer that points at it."""
    if endpoint is None:
        return None
    conn = endpoint.conn_id
    if status == 401:
        return (
            f"The API key of connection {conn!r} was refused: put a valid Apilaplas key in its "
            "password field ('API Key')"
        )
    if status == 403:
        return (
            f"The API key of connection {conn!r} was refused for this call: its account may have no "
            "credits left or no access to this model"
        )
    if status == 404 and (method == "POST" or urlsplit(endpoint.base_url).path):
        return (
            f"The host of connection {conn!r} must be the base URL only (e.g. {DEFAULT_BASE_URL}), "
            f"not the endpoint path: it is {endpoint.host_text or endpoint.base_url!r}, and the "
            f"provider adds {', '.join(ENDPOINT_PATHS.values())} itself"
        )
    return None


def _read_response(
    method: str, path: str, status: int, body: bytes, headers: Any, endpoint: _Endpoint | None = None
) -> dict[str, Any]:
    """Turn one HTTP answer into its JSON body, or the provider's error for it."""
    if 200 <= status < 300:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            data = None
        if not isinstance(data, dict):
            snippet = body[:200].decode("utf-8", "replace")
            raise KlingServerError(
                status,
                f"answered with a body that is not a JSON object: {snippet!r}",
                method=method,
                path=path,
            )
        return data
    try:
        err = json.loads(body)
    except (ValueError, RecursionError):
        err = None
    message = ""
    request_id = None
    if isinstance(err, dict):
        message = str(err.get("message") or err.get("detail") or err.get("error") or "")
        request_id = err.get("requestId") or err.get("request_id")
    if not message:
        message = body[:200].decode("utf-8", "replace").strip() or "no message"
    cls = _ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = KlingServerError if status >= 500 else KlingAPIError
    raise cls(
        status,
        message[:500],
        request_id=str(request_id)[:100] if request_id else None,
        method=method,
        path=path,
        retry_after=_parse_retry_after(headers.get("Retry-After")),
        hint=_hint(status, method, endpoint),
    )


def _too_large(method: str, path: str, status: int, size: int | str) -> KlingResponseTooLarge:
    return KlingResponseTooLarge(
        status,
        f"answered a body of {size} bytes, more than the {MAX_RESPONSE_BYTES} bytes an API answer may "
        "have; it was not read",
        method=method,
        path=path,
    )


def _created_nothing(exc: BaseException) -> bool:
    """True when a failed POST surely created no generation, so sending it again cannot pay twice."""
    if isinstance(exc, KlingConnectionError):
        return exc.nothing_sent and exc.retryable
    return isinstance(exc, KlingRateLimitError) or (isinstance(exc, KlingAPIError) and exc.status_code == 503)


def post_may_have_created(exc: BaseException) -> bool:
    """True when a failed POST may still have created (and charged for) a generation.

    That is a request that got no readable answer, a 5xx other than 503, or a 2xx the provider could
    not use (no id, an id it cannot poll, a body too large): the service may have accepted it.
    Sending it again, by the hook or by an Airflow retry, could pay twice.
    """
    if isinstance(exc, KlingConnectionError):
        return not exc.nothing_sent
    if isinstance(exc, KlingAPIError) and not _created_nothing(exc):
        return exc.status_code >= 500 or 200 <= exc.status_code < 300
    return False


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, KlingConnectionError):
        return exc.retryable
    return isinstance(exc, KlingAPIError) and exc.retryable


def _backoff(first: float, longest: float) -> wait_exponential_jitter:
    """Exponential backoff with jitter starting at ``first`` seconds, capped at ``longest``."""
    try:
        # Newer tenacity names the first wait ``multiplier`` and warns on ``initial`` at every call.
        return wait_exponential_jitter(multiplier=first, max=longest)
    except TypeError:  # older tenacity
        return wait_exponential_jitter(initial=first, max=longest)


class _RedactQueries(logging.Filter):
    """Redacts URL query strings in urllib3's own debug lines (``"GET /v.mp4?X-Amz-Signature=..."``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "?" in a for a in record.args):
            record.args = tuple(
                _redact_query(a) if isinstance(a, str) and "?" in a else a for a in record.args
            )
        elif isinstance(record.msg, str) and "?" in record.msg and not record.args:
            record.msg = redact_urls(record.msg)
        return True


def _install_log_redaction() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactQueries) for f in logger.filters):
        logger.addFilter(_RedactQueries())


_install_log_redaction()


def _redact_query(url: str) -> str:
    """Video URLs are signed: keep the signature out of logs and errors."""
    base, sep, _ = url.partition("?")
    return f"{base}?<redacted>" if sep else base


def _tls_reason(exc: BaseException) -> str:
    text = str(exc)
    found = re.search(r"\[SSL: ([A-Z_]+)\] ([^('\")]+)", text) or re.search(
        r"(certificate verify failed[^'\")]*)", text
    )
    if found:
        return " ".join(part.strip() for part in found.groups())
    return redact_urls(text)[:200]


def _tls_error(exc: BaseException, endpoint: _Endpoint | None, where: str) -> KlingTLSError:
    reason = _tls_reason(exc)
    if endpoint is not None and endpoint.assumed_https:
        return KlingTLSError(
            f"TLS handshake with {where} failed ({reason}), so nothing was sent: assumed https:// for "
            f"host {endpoint.host_text!r} of connection {endpoint.conn_id!r}, which has no scheme; "
            f"for a local emulator use {endpoint.base_url.replace('https://', 'http://', 1)}"
        )
    return KlingTLSError(
        f"TLS handshake with {where} failed ({reason}), so nothing was sent; not retried: fix the "
        "certificate or the host's scheme"
    )


def _connection_error(exc: BaseException, what: str, *, nothing_sent: bool) -> KlingConnectionError:
    return KlingConnectionError(
        redact_urls(f"{what}: {type(exc).__name__}: {exc}"), nothing_sent=nothing_sent
    )


def _id_from_submit(body: dict[str, Any], path: str = GENERATION_PATH) -> str:
    """The id a POST answer carries; an unusable id is a paid-for problem, never "nothing was sent"."""
    generation_id = body.get("id") or body.get("generation_id")
    if generation_id is None or generation_id == "":
        raise KlingServerError(
            200,
            f"the service accepted the generation but sent no id: {str(body)[:500]}",
            method="POST",
            path=path,
        )
    if isinstance(generation_id, bool) or not isinstance(generation_id, (str, int)):
        raise KlingUnusableIdError(repr(generation_id)[:300], "it is not text", path=path)
    text = str(generation_id)
    problem = _id_problem(text)
    if problem:
        raise KlingUnusableIdError(
            text,
            f"ids must be non-empty text of at most {MAX_ID_LENGTH} characters without spaces or "
            f"control characters ({problem})",
            path=path,
        )
    return text


# Connection lookups in flight per (event loop, connection id); see KlingHook.aendpoint.
_ENDPOINT_LOOKUPS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, asyncio.Task[_Endpoint]]
] = weakref.WeakKeyDictionary()


def _forget(lookups: dict[str, Any], key: str, done: Any) -> None:
    if lookups.get(key) is done:
        del lookups[key]


# One aiohttp ClientSession per (event loop, connection id), shared by every trigger on that loop.
# Settings that differ per trigger (timeouts) travel with each request, never with the session.
_ASYNC_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, list[Any]]] = (
    weakref.WeakKeyDictionary()
)


class _CallTimedOut(Exception):
    """One HTTP attempt outlived its wall-clock budget (headers to last byte)."""


class KlingHook(BaseHook):
    """Talk to the Kling image-to-video API through an Airflow connection of type ``kling``.

    The connection's password is the API key; its host is optional (default
    ``https://api.apilaplas.com``) and may be a full URL. Plain http is accepted only to loopback hosts.
    Video downloads go to https hosts with public addresses only; the connection extra
    ``{"allow_loopback_downloads": true}`` also allows loopback hosts (over http too), for the emulator.

    Use it as a context manager, or call :meth:`close`, to release its keep-alive sockets.

    :param kling_conn_id: the connection to use.
    :param timeout: (connect, read) timeout in seconds for each HTTP call.
    :param max_attempts: attempts per call for retryable failures (429, 5xx, network errors).
    :param retry_min_wait: first backoff wait in seconds; it doubles each retry, with jitter.
    :param retry_max_wait: longest backoff wait in seconds.
    :param pool_limit: most sockets the shared async session keeps open to the service.
    :param call_timeout: wall-clock bound of one API attempt, connect to last byte (default: the
        connect and read timeouts added), so a server dribbling bytes cannot hold a call.
    """

    conn_name_attr = "kling_conn_id"
    default_conn_name = "kling_default"
    conn_type = "kling"
    hook_name = "Kling"

    def __init__(
        self,
        kling_conn_id: str = default_conn_name,
        *,
        timeout: tuple[float, float] = (10.0, 60.0),
        max_attempts: int = 6,
        retry_min_wait: float = 1.0,
        retry_max_wait: float = 60.0,
        pool_limit: int = 100,
        call_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.kling_conn_id = kling_conn_id
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.max_attempts = max(1, int(max_attempts))
        self.retry_min_wait = retry_min_wait
        self.retry_max_wait = retry_max_wait
        self.pool_limit = pool_limit
        self.call_timeout = float(call_timeout) if call_timeout else self.timeout[0] + self.timeout[1]
        self._endpoint: _Endpoint | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kling_conn_id={self.kling_conn_id!r})"

    def __enter__(self) -> KlingHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the hook's requests.Session (its keep-alive sockets); the hook stays usable."""
        session = self.__dict__.pop("session", None)
        if session is not None:
            session.close()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form: only the base URL and the API key mean anything here."""
        from airflow_provider_kling import get_provider_info

        behaviour = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
        return {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        }

    # ----------------------------------------------------------------------------- connection
    @property
    def endpoint(self) -> _Endpoint:
        """Base URL and key from the connection, read once per hook."""
        if self._endpoint is None:
            endpoint = endpoint_from_connection(self.get_connection(self.kling_conn_id))
            _mask(endpoint.api_key)
            self._endpoint = endpoint
        assert self._endpoint is not None
        return self._endpoint

    async def aendpoint(self) -> _Endpoint:
        """As :attr:`endpoint`, reading the connection without blocking the event loop.

        Hooks on one event loop that ask for the same connection while a lookup is in flight share
        that lookup: a triggerer starting a thousand triggers reads the connection once, not a
        thousand times in one loop iteration. A lookup that starts later reads it afresh.
        """
        if self._endpoint is None:
            loop = asyncio.get_running_loop()
            lookups = _ENDPOINT_LOOKUPS.setdefault(loop, {})
            lookup = lookups.get(self.kling_conn_id)
            if lookup is None:
                lookup = lookups[self.kling_conn_id] = loop.create_task(self._alookup_endpoint())
                lookup.add_done_callback(partial(_forget, lookups, self.kling_conn_id))
            # shield: one waiter being cancelled must not cancel the lookup the others wait on.
            self._endpoint = await asyncio.shield(lookup)
        assert self._endpoint is not None
        return self._endpoint

    async def _alookup_endpoint(self) -> _Endpoint:
        aget = getattr(self, "aget_connection", None)
        if aget is not None:
            conn = await aget(self.kling_conn_id)
        else:  # Airflow 2: no async connection lookup
            from asgiref.sync import sync_to_async

            conn = await sync_to_async(self.get_connection)(self.kling_conn_id)
        endpoint = endpoint_from_connection(conn)
        await _amask(endpoint.api_key)
        return endpoint

    @cached_property
    def session(self) -> requests.Session:
        """The hook's one requests.Session (keep-alive pool). It carries no credentials itself."""
        session = requests.Session()
        session.headers["User-Agent"] = _user_agent()
        return session

    def get_conn(self) -> requests.Session:
        """Return the hook's requests.Session."""
        return self.session

    # ----------------------------------------------------------------------------- retry rules
    def _retry_kwargs(
        self, method: str, attempts: int | None = None, deadline: float | None = None
    ) -> dict[str, Any]:
        """The tenacity settings for one call; the same for the sync and async paths.

        :param deadline: a UNIX epoch float no retry may pass: every wait (backoff or Retry-After) is
            capped at the time left, and no attempt starts after it, nor when the service asks to be
            left alone until after it.
        """
        backoff = _backoff(self.retry_min_wait, self.retry_max_wait)
        most = attempts or self.max_attempts

        def asked_wait(state: RetryCallState) -> float | None:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            return None if retry_after is None else min(float(retry_after), MAX_RETRY_AFTER)

        def wait(state: RetryCallState) -> float:
            asked = asked_wait(state)
            seconds = asked if asked is not None else float(backoff(state))
            if deadline is not None:
                seconds = max(0.0, min(seconds, deadline - time.time()))
            return seconds

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= most:
                return True
            if deadline is None:
                return False
            left = deadline - time.time()
            asked = asked_wait(state)
            if left <= 0 or (asked is not None and asked > left):
                stopped_by_deadline.append(True)
                return True
            return False

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0
            self.log.warning(
                "Kling %s failed (attempt %s of %s): %s; retrying in %.1f s",
                method,
                state.attempt_number,
                most,
                exc,
                sleep,
            )

        stopped_by_deadline: list[bool] = []
        return {
            "retry": retry_if_exception(_created_nothing if method == "POST" else _transient),
            "stop": stop,
            "wait": wait,
            "before_sleep": before_sleep,
            "reraise": True,
            "_stopped_by_deadline": stopped_by_deadline,
        }

    def _budget(self, deadline: float | None) -> float:
        """Seconds one attempt may take in all: the call timeout, cut to the deadline's time left."""
        if deadline is None:
            return self.call_timeout
        return min(self.call_timeout, max(deadline - time.time(), _MIN_ATTEMPT_SECONDS))

    @staticmethod
    def _past_deadline(exc: BaseException, deadline: float | None, stopped: list[bool]) -> BaseException:
        """The error to raise for a call that failed: a transient failure at the deadline says so."""
        if deadline is not None and _transient(exc) and (stopped or time.time() >= deadline):
            return KlingDeadlineExceeded(
                f"deadline {_utc(deadline)} reached while retrying: {exc}", deadline=deadline, last_error=exc
            )
        return exc

    # ----------------------------------------------------------------------------- sync calls
    def _send_once(
        self, endpoint: _Endpoint, method: str, url: str, path: str, budget: float, **kw: Any
    ) -> Any:
        """One API attempt on the sync path: at most ``budget`` seconds and MAX_RESPONSE_BYTES."""
        started = time.monotonic()
        read_timeout = min(self.timeout[1], budget)
        try:
            resp = self.session.request(
                method,
                url,
                headers=endpoint.headers,
                auth=_BearerAuth(endpoint.api_key),
                timeout=(min(self.timeout[0], budget), read_timeout),
                allow_redirects=False,
                stream=True,
                **kw,
            )
        except requests.exceptions.SSLError as exc:
            raise _tls_error(exc, endpoint, _netloc_of(url)) from None
        except (requests.exceptions.ConnectTimeout, requests.exceptions.ConnectionError) as exc:
            refused = isinstance(exc, requests.exceptions.ConnectTimeout) or _is_refused(exc)
            raise _connection_error(
                exc, f"could not reach {endpoint.base_url}", nothing_sent=refused
            ) from None
        except requests.exceptions.RequestException as exc:
            raise _connection_error(exc, f"no answer from {endpoint.base_url}", nothing_sent=False) from None
        with resp:
            ok = 200 <= resp.status_code < 300
            announced = resp.headers.get("Content-Length", "")
            if ok and announced.isdigit() and int(announced) > MAX_RESPONSE_BYTES:
                raise _too_large(method, path, resp.status_code, announced)
            try:
                body = _read_sync(resp, started + budget, MAX_RESPONSE_BYTES)
            except _CallTimedOut:
                raise KlingConnectionError(
                    f"no complete answer from {endpoint.base_url} within {budget:.1f} s "
                    "(the call's wall-clock bound)",
                    nothing_sent=False,
                ) from None
            except (OSError, requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise _connection_error(
                    exc, f"no answer from {endpoint.base_url}", nothing_sent=False
                ) from None
            if len(body) > MAX_RESPONSE_BYTES:
                if ok:
                    raise _too_large(method, path, resp.status_code, f"more than {MAX_RESPONSE_BYTES}")
                body = body[:MAX_RESPONSE_BYTES]
            return _read_response(method, path, resp.status_code, body, resp.headers, endpoint)

    def _call(
        self,
        method: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        attempts: int | None = None,
        api: str | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        endpoint = self.endpoint
        path = endpoint.path(api)
        url = endpoint.base_url + path
        kwargs = self._retry_kwargs(method, attempts, deadline)
        stopped = kwargs.pop("_stopped_by_deadline")
        try:
            for attempt in Retrying(**kwargs):
                with attempt:
                    return self._send_once(
                        endpoint, method, url, path, self._budget(deadline), params=params, json=json
                    )
        except KlingError as exc:
            failure = self._past_deadline(exc, deadline, stopped)
            if failure is exc:
                raise
            raise failure from None
        raise AssertionError("unreachable")  # pragma: no cover

    def submit(self, request: KlingRequest | dict[str, Any]) -> Generation:
        """Validate ``request`` and start a paid generation on the connection's endpoint.

        Retried only when the service surely created nothing (refused connection, failed TLS
        handshake, 429, 503), never after a timeout or a dropped answer, so one call never pays twice.

        :param request: a :class:`~airflow_provider_kling.models.KlingRequest` or a dict of its fields.
        :return: the submit answer: the id, the first status and the usage billed at submit.
        :raises KlingUnusableIdError: the service accepted it but answered an id that cannot be polled.
        """
        validated = resolve_file_inputs(build_request(request), self.log)
        payload = validated.payload(self.endpoint.api)
        body = self._call("POST", json=payload)
        generation = Generation.from_api(body, _id_from_submit(body, self.endpoint.path()))
        # Ids of the form "<uuid>:<model>" already name the model: say it once.
        model = "" if validated.model in generation.id else f"model {validated.model}, "
        self.log.info(
            "Kling generation %s submitted (%s%s endpoint)", generation.id, model, self.endpoint.api
        )
        return generation

    def submit_generation(self, request: KlingRequest | dict[str, Any]) -> str:
        """As :meth:`submit`, returning only the generation id."""
        return self.submit(request).id

    def get_generation(
        self, generation_id: str, *, api: str | None = None, deadline: float | None = None
    ) -> Generation:
        """Poll a generation once (retrying transient failures).

        :param generation_id: the id :meth:`submit_generation` returned (opaque; sent URL-encoded).
        :param api: the endpoint it was created on (default: the connection's).
        :param deadline: a UNIX epoch float that bounds the retries (see :class:`KlingDeadlineExceeded`).
        """
        generation_id = check_generation_id(generation_id)
        body = self._call(
            "GET", params={"generation_id": generation_id}, api=check_api(api), deadline=deadline
        )
        return Generation.from_api(body, generation_id)

    def wait_for_generation(
        self,
        generation_id: str,
        poll_interval: float = 10.0,
        timeout: float = 600.0,
        *,
        api: str | None = None,
    ) -> Generation:
        """Poll until the generation completes; log each status change with the elapsed time.

        :param generation_id: the generation to wait for.
        :param poll_interval: seconds between polls.
        :param timeout: seconds to wait in all before :class:`KlingGenerationTimeout`; it also bounds
            the retries of each poll.
        :raises KlingGenerationFailed: the service ended it in error.
        """
        check_poll_settings(poll_interval, timeout)
        start = time.monotonic()
        deadline = start + timeout
        epoch_deadline = time.time() + timeout
        last: str | None = None
        while True:
            try:
                generation = self.get_generation(generation_id, api=api, deadline=epoch_deadline)
            except KlingDeadlineExceeded as exc:
                raise KlingGenerationTimeout(generation_id, timeout, str(last)) from exc
            elapsed = time.monotonic() - start
            if generation.raw_status != last:
                self.log.info(
                    "Kling generation %s is %s after %.1f s", generation_id, generation.raw_status, elapsed
                )
                last = generation.raw_status
            raise_for_terminal(generation)
            if generation.status is GenerationStatus.COMPLETED:
                return generation
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KlingGenerationTimeout(generation_id, timeout, str(last))
            time.sleep(min(poll_interval, remaining))

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated GET (for an id that cannot exist): says whether the key was accepted."""
        try:
            endpoint = self.endpoint
            self._call("GET", params={"generation_id": "airflow-connection-test"}, attempts=1)
        except KlingAuthError as exc:
            return False, f"The API key was refused by {endpoint.base_url}: {exc.message}"
        except (KlingNotFoundError, KlingBadRequestError) as exc:
            if exc.hint:  # a 404 from a host that holds a path: the path, not the id, was not found
                return False, str(exc)
            return True, f"Connected to {endpoint.base_url}: the API key was accepted"
        except KlingConnectionError as exc:
            return False, f"Could not reach the Kling API: {exc}"
        except KlingConfigError as exc:
            return False, str(exc)
        except KlingError as exc:
            return False, str(exc)
        return True, f"Connected to {endpoint.base_url}: the API key was accepted"

    # ----------------------------------------------------------------------------- download
    def download_video(
        self,
        url: str,
        destination: Any,
        *,
        file_name: str | None = None,
        expected_size: int | None = None,
        overwrite: bool = False,
        attempts: int = 3,
        timeout: float = DOWNLOAD_TIMEOUT,
    ) -> str:
        """Stream a video to a local path or an ObjectStoragePath / fsspec URL in constant memory.

        The bytes go to a temporary name beside the target and are moved into place only when the
        count matches Content-Length and ``expected_size``; a failed try leaves nothing behind and
        the download is retried on network errors. The API key is never sent to the video's host.

        Only https URLs to public addresses are fetched, and every redirect hop is checked again:
        a host that resolves to a private, loopback, link-local, multicast or reserved address is
        refused before any connection. The connection extra ``allow_loopback_downloads`` lets
        loopback hosts through (over http too), for the emulator.

        :param url: the video URL from the completed generation.
        :param destination: a file path, or a folder (existing, or written with a trailing ``/``).
        :param file_name: the name to use when ``destination`` is a folder.
        :param expected_size: the size the API announced (``file_size``).
        :param overwrite: replace an existing file instead of raising.
        :param attempts: tries in all for network failures.
        :param timeout: wall-clock bound of one try, in seconds.
        :return: the path (or URL) written.
        """
        target = resolve_destination(destination, file_name or _name_from_url(url))
        if target.exists() and not overwrite:
            raise KlingDownloadError(f"{target} already exists; pass overwrite=True to replace it")
        allow_loopback = self.endpoint.allow_loopback_downloads
        retry = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, KlingConnectionError) and e.retryable),
            stop=stop_after_attempt(max(1, attempts)),
            wait=_backoff(self.retry_min_wait, self.retry_max_wait),
            reraise=True,
            before_sleep=lambda s: self.log.warning(
                "Download of %s failed (attempt %s): %s; retrying",
                target,
                s.attempt_number,
                s.outcome.exception() if s.outcome else None,
            ),
        )
        for attempt in retry:
            with attempt:
                written = self._download_once(
                    url, target, expected_size, allow_loopback, timeout, overwrite=overwrite
                )
        self.log.info("Downloaded %s bytes to %s", written, target)
        return str(target)

    def _open_following_redirects(self, url: str, allow_loopback: bool, budget: float) -> requests.Response:
        for _ in range(_MAX_REDIRECTS + 1):
            check_download_url(url, allow_loopback=allow_loopback)
            try:
                resp = self.session.get(
                    url,
                    stream=True,
                    timeout=(min(self.timeout[0], budget), min(self.timeout[1], budget)),
                    allow_redirects=False,
                    auth=_NoAuth(),
                    headers={"Accept-Encoding": "identity"},
                )
            except requests.exceptions.SSLError as exc:
                raise _tls_error(exc, None, _netloc_of(url)) from None
            except requests.exceptions.RequestException as exc:
                raise _connection_error(exc, "video download failed", nothing_sent=True) from None
            if resp.is_redirect:
                location = resp.headers.get("Location", "")
                resp.close()
                url = urljoin(url, location)
                continue
            if resp.status_code >= 400:
                resp.close()
                error: type[Exception] = (
                    KlingConnectionError if resp.status_code >= 500 else KlingDownloadError
                )
                raise error(f"video download from {_redact_query(url)} answered {resp.status_code}")
            return resp
        raise KlingDownloadError(f"more than {_MAX_REDIRECTS} redirects downloading the video")

    def _download_once(
        self,
        url: str,
        target: Any,
        expected_size: int | None,
        allow_loopback: bool,
        budget: float,
        *,
        overwrite: bool = True,
    ) -> int:
        started = time.monotonic()
        resp = self._open_following_redirects(url, allow_loopback, budget)
        # A server that encodes anyway (we asked for identity): the decoded size is the file's size.
        encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        announced = None if encoded else resp.headers.get("Content-Length")
        tmp = _temporary_sibling(target)
        written = 0
        try:
            with resp, _open_for_write(tmp) as out:
                try:
                    for chunk in _iter_body(resp, started + budget):
                        out.write(chunk)
                        written += len(chunk)
                except _CallTimedOut:
                    raise KlingConnectionError(
                        f"video download took longer than {budget:.0f} s (after {written} bytes)"
                    ) from None
                except (OSError, requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
                    raise _connection_error(exc, "video download dropped", nothing_sent=True) from None
            if announced is not None and announced.isdigit() and written != int(announced):
                raise KlingConnectionError(
                    f"video download ended after {written} of {announced} bytes (Content-Length)"
                )
            if expected_size is not None and written != expected_size:
                raise KlingDownloadError(
                    f"video is {written} bytes but the API announced file_size {expected_size}; not kept"
                )
            _move_into_place(tmp, target, overwrite=overwrite)
        except BaseException:
            _remove_quietly(tmp)
            raise
        return written

    # ----------------------------------------------------------------------------- async calls
    @contextlib.asynccontextmanager
    async def async_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """Hold the event loop's shared aiohttp session for this connection while the block runs.

        Triggers wrap their whole life in this, so every poll of every trigger on a loop reuses one
        keep-alive pool; the session closes when its last holder leaves. The session carries no
        timeouts: each request carries its own hook's (see :meth:`_acall`).
        """
        loop = asyncio.get_running_loop()
        per_loop = _ASYNC_SESSIONS.setdefault(loop, {})
        entry = per_loop.get(self.kling_conn_id)
        if entry is None or entry[0].closed:
            import aiohttp

            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_limit, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": _user_agent()},
                trust_env=False,
            )
            entry = per_loop[self.kling_conn_id] = [session, 0]
        entry[1] += 1
        try:
            yield entry[0]
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                if per_loop.get(self.kling_conn_id) is entry:
                    del per_loop[self.kling_conn_id]
                await entry[0].close()

    async def _acall(
        self,
        method: str,
        *,
        params: dict[str, str] | None = None,
        attempts: int | None = None,
        api: str | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        import aiohttp

        endpoint = await self.aendpoint()
        path = endpoint.path(api)
        url = endpoint.base_url + path
        where = _netloc_of(url)

        async def once(session: aiohttp.ClientSession) -> dict[str, Any]:
            budget = self._budget(deadline)
            per_request = aiohttp.ClientTimeout(
                total=budget,
                sock_connect=min(self.timeout[0], budget),
                sock_read=min(self.timeout[1], budget),
            )
            try:
                async with session.request(
                    method,
                    url,
                    params=params,
                    headers=endpoint.auth_headers,
                    timeout=per_request,
                    allow_redirects=False,
                ) as resp:
                    status, headers = resp.status, resp.headers
                    ok = 200 <= status < 300
                    announced = headers.get("Content-Length", "")
                    if ok and announced.isdigit() and int(announced) > MAX_RESPONSE_BYTES:
                        raise _too_large(method, path, status, announced)
                    body = bytearray()
                    while len(body) <= MAX_RESPONSE_BYTES:
                        piece = await resp.content.read(_READ_PIECE)
                        if not piece:
                            break
                        body += piece
                    if len(body) > MAX_RESPONSE_BYTES:
                        if ok:
                            raise _too_large(method, path, status, f"more than {MAX_RESPONSE_BYTES}")
                        del body[MAX_RESPONSE_BYTES:]
            except aiohttp.ClientSSLError as exc:
                raise _tls_error(exc, endpoint, where) from None
            except aiohttp.ClientConnectorError as exc:
                raise _connection_error(
                    exc, f"could not reach {endpoint.base_url}", nothing_sent=True
                ) from None
            except asyncio.TimeoutError as exc:
                raise KlingConnectionError(
                    f"no complete answer from {endpoint.base_url} within its timeouts (read "
                    f"{min(self.timeout[1], budget):.1f} s, whole call {budget:.1f} s): "
                    f"{type(exc).__name__}",
                    nothing_sent=False,
                ) from None
            except aiohttp.ClientError as exc:
                raise _connection_error(
                    exc, f"no answer from {endpoint.base_url}", nothing_sent=False
                ) from None
            return _read_response(method, path, status, bytes(body), headers, endpoint)

        async with self.async_session() as session:
            # Fast path: a trigger polls thousands of times and nearly every poll succeeds; a tenacity
            # loop per poll leaves ~40 objects in reference cycles, and the garbage collector's full
            # passes over a triggerer's heap then stall every trigger on the loop.
            try:
                return await once(session)
            except Exception as exc:
                retryable = _created_nothing(exc) if method == "POST" else _transient(exc)
                if not retryable or (attempts or self.max_attempts) <= 1:
                    failure = self._past_deadline(exc, deadline, [])
                    if failure is exc:
                        raise
                    raise failure from None
                first_failure: Exception | None = exc
            # The same retry rules as ever: tenacity replays the failure above as its attempt 1.
            kwargs = self._retry_kwargs(method, attempts, deadline)
            stopped = kwargs.pop("_stopped_by_deadline")
            try:
                async for attempt in AsyncRetrying(**kwargs):
                    with attempt:
                        if first_failure is not None:
                            failure, first_failure = first_failure, None
                            raise failure
                        return await once(session)
            except KlingError as exc:
                failure = self._past_deadline(exc, deadline, stopped)
                if failure is exc:
                    raise
                raise failure from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def aget_generation(
        self,
        generation_id: str,
        *,
        attempts: int | None = None,
        api: str | None = None,
        deadline: float | None = None,
    ) -> Generation:
        """Poll a generation once without blocking the event loop (for triggers).

        :param generation_id: the generation to read (opaque; sent URL-encoded).
        :param attempts: attempts for transient failures (default: the hook's ``max_attempts``).
        :param api: the endpoint it was created on (default: the connection's).
        :param deadline: a UNIX epoch float (the trigger's ``end_time``) that bounds every wait and
            retry of this poll; transient failures at it raise :class:`KlingDeadlineExceeded`.
        """
        generation_id = check_generation_id(generation_id)
        body = await self._acall(
            "GET",
            params={"generation_id": generation_id},
            attempts=attempts,
            api=check_api(api),
            deadline=deadline,
        )
        return Generation.from_api(body, generation_id)


# --------------------------------------------------------------------------------- helpers
def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _netloc_of(url: str) -> str:
    return urlsplit(url).netloc


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


def _is_forbidden_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool
) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    for kind in ("private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:
        return "not public"
    return None


def check_download_url(url: str, *, allow_loopback: bool = False) -> None:
    """Refuse a video URL (or redirect hop) the download policy does not allow, before connecting.

    The host is resolved and every address it resolves to must be public: a private, loopback,
    link-local, multicast, reserved or unspecified address is refused. Only https is allowed, except
    plain http to a loopback host when ``allow_loopback`` is set (the emulator).

    :raises KlingDownloadError: naming the URL without its (signed) query string.
    """
    shown = _redact_query(url)
    try:
        scheme, hostname, port, _ = _split_http_url(url, "video URL")
    except ValueError as exc:
        raise KlingDownloadError(
            f"refusing to download from {shown!r}: {redact_urls(str(exc))}; only http(s) URLs are followed"
        ) from None
    try:
        infos = socket.getaddrinfo(
            hostname, port or (443 if scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise KlingConnectionError(
            f"video download failed: cannot resolve {hostname!r}: {exc}", nothing_sent=True
        ) from None
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    for address in sorted(addresses, key=str):
        kind = _is_forbidden_address(address, allow_loopback)
        if kind:
            hint = (
                " (set the connection extra allow_loopback_downloads for a local emulator)"
                if kind == "loopback"
                else ""
            )
            raise KlingDownloadError(
                f"refusing to download from {shown!r}: {hostname} resolves to {address}, a {kind} "
                f"address; videos are fetched only from public addresses{hint}"
            )
    if scheme == "http" and not (allow_loopback and all(a.is_loopback for a in addresses)):
        raise KlingDownloadError(
            f"refusing to download from {shown!r}: plain http; videos are fetched over https only "
            "(plain http only to loopback hosts, with the connection extra allow_loopback_downloads)"
        )


def check_poll_settings(poll_interval: Any, timeout: Any) -> None:
    """Reject poll intervals and timeouts that cannot be meant (before anything is sent)."""
    errors = []
    if (
        isinstance(poll_interval, bool)
        or not isinstance(poll_interval, (int, float))
        or not (0.01 <= poll_interval <= 3600)
    ):
        errors.append(
            ("poll_interval", f"must be a number of seconds from 0.01 to 3600, got {poll_interval!r}")
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 < timeout <= 7 * 86400):
        errors.append(("timeout", f"must be a number of seconds above 0 and at most 7 days, got {timeout!r}"))
    if errors:
        raise KlingValidationError(errors)


def raise_for_terminal(generation: Generation) -> None:
    """Raise :class:`KlingGenerationFailed` when the service ended the generation in error."""
    if generation.status is GenerationStatus.FAILED:
        raise KlingGenerationFailed(generation.id, generation.error or "unknown error")


# Digests of the keys already registered with Airflow's secret masker in this process: each
# registration is logged (at debug) and sent to the supervisor, so a key is registered once.
_MASKED: set[str] = set()


def _mask_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _mask(secret: str) -> None:
    digest = _mask_digest(secret)
    if digest in _MASKED:
        return
    from airflow.providers.common.compat.sdk import mask_secret

    mask_secret(secret)
    _MASKED.add(digest)


async def _amask(secret: str) -> None:
    digest = _mask_digest(secret)
    if digest in _MASKED:
        return
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow 2
        _mask(secret)
    else:
        await amask_secret(secret)
        _MASKED.add(digest)


def _user_agent() -> str:
    from airflow_provider_kling import __version__

    return f"airflow-provider-kling/{__version__}"


def _is_refused(exc: BaseException) -> bool:
    """Walk the cause chain for a refused TCP connect (nothing was sent)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "NewConnectionError" in type(seen).__name__:
            return True
        if seen.args and isinstance(seen.args[0], BaseException) and seen.args[0] is not seen:
            seen = seen.args[0]
            continue
        seen = seen.__cause__ or seen.__context__
    return "Connection refused" in str(exc) or "Failed to establish a new connection" in str(exc)


def safe_file_name(name: str) -> str:
    """A file name with no directory parts or odd characters (ids and URLs come from the service)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "video"
    return name[:200]


def _name_from_url(url: str) -> str:
    tail = urlsplit(url).path.rsplit("/", 1)[-1]
    return safe_file_name(tail or "video.mp4")


def _is_remote(destination: Any) -> bool:
    if isinstance(destination, (str, os.PathLike)) and not hasattr(destination, "fs"):
        text = os.fspath(destination)
        return "://" in text and not text.startswith("file://")
    return hasattr(destination, "fs")


def resolve_destination(destination: Any, file_name: str) -> Any:
    """A local Path or an ObjectStoragePath for the file to write; a folder gets ``file_name`` appended.

    A destination ending in a separator, or naming an existing folder, is a folder.
    """
    file_name = safe_file_name(file_name)
    if _is_remote(destination):
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        text = str(destination)
        path = destination if hasattr(destination, "fs") else ObjectStoragePath(text)
        if text.endswith("/") or path.is_dir():
            path = path / file_name
        return path
    text = os.fspath(destination)
    if text.startswith("file://"):
        text = text[len("file://") :]
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or path.is_dir():
        path = path / file_name
    return path


def _temporary_sibling(target: Any) -> Any:
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.part"


def _is_local(path: Any) -> bool:
    # On Airflow 2 (universal-pathlib 0.2) an ObjectStoragePath is a pathlib.Path too; its fs tells.
    return isinstance(path, Path) and not hasattr(path, "fs")


@contextlib.contextmanager
def _open_for_write(path: Any) -> Iterator[Any]:
    if _is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            yield out
    else:
        with contextlib.suppress(Exception):  # object stores have no folders to create
            path.parent.mkdir(parents=True, exist_ok=True)
        # Object-store writers buffer a whole part in memory (s3fs: 50 MB by default, held two or three
        # times over while a part uploads): parts of _WRITE_BLOCK keep a 256 MB upload near 30 MB.
        try:
            handle = path.open("wb", block_size=_WRITE_BLOCK)
        except TypeError:  # a filesystem whose open() takes no block_size
            handle = path.open("wb")
        with handle as out:
            yield out


def _move_into_place(tmp: Any, target: Any, *, overwrite: bool = True) -> None:
    """Put a finished download in place; without ``overwrite``, never over a file that appeared meanwhile.

    Locally a hard link is the atomic "create only if absent", so of two tasks downloading to one file
    at the same moment exactly one keeps it. Object stores have no such primitive here: the earlier
    existence check is all there is.
    """
    if not _is_local(tmp):
        tmp.rename(target)
    elif overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise KlingDownloadError(
                f"{target} already exists (another download finished it first); nothing was replaced: "
                "pass overwrite=True to replace it"
            ) from None
        os.unlink(tmp)


def _remove_quietly(path: Any) -> None:
    with contextlib.suppress(Exception):
        if path.exists():
            path.unlink()


__all__ = [
    "ALLOW_LOOPBACK_DOWNLOADS",
    "DEFAULT_BASE_URL",
    "GENERATION_PATH",
    "MAX_RESPONSE_BYTES",
    "KlingHook",
    "check_download_url",
    "check_generation_id",
    "check_poll_settings",
    "endpoint_from_connection",
    "post_may_have_created",
    "raise_for_terminal",
    "redact_urls",
    "resolve_destination",
    "safe_file_name",
]
