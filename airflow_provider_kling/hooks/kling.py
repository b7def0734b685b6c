"""Hook for the Kling image-to-video API (Apilaplas).

The sync path (requests) serves operators and sensors in poke mode; the async path (aiohttp) serves
triggers. Both share everything but the transport: URL and key resolution, error mapping, retry
rules and response parsing live once, below.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import json
import logging
import os
import re
import time
import uuid
import weakref
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import requests
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
    KlingDownloadError,
    KlingForbiddenError,
    KlingGenerationFailed,
    KlingGenerationTimeout,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingServerError,
    KlingValidationError,
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
_CHUNK = 1024 * 1024
_MAX_REDIRECTS = 5
_GENERATION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/=+-]{0,255}$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Endpoint:
    """Where to call and with what key; the key is kept out of repr.

    :param api: which of the service's endpoints new generations go to: ``legacy`` or ``unified``.
    """

    base_url: str
    api_key: str
    api: str = DEFAULT_ENDPOINT
    conn_id: str = "?"

    def __repr__(self) -> str:
        return f"_Endpoint(base_url={self.base_url!r}, api={self.api!r}, api_key=***)"

    def path(self, api: str | None = None) -> str:
        """The generation path of ``api`` (default: the connection's endpoint)."""
        return ENDPOINT_PATHS[api or self.api]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_from_connection(conn: Any) -> _Endpoint:
    """Check a ``kling`` connection and turn it into the base URL and key to call with.

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
    host = (conn.host or "").strip() or DEFAULT_BASE_URL
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KlingConfigError(
            f"Connection {conn_id!r}: host {host!r} is not an http(s) URL; leave it empty for "
            f"{DEFAULT_BASE_URL} or give a full URL such as https://api.example.com"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise KlingConfigError(
            f"Connection {conn_id!r}: host {host!r} uses plain http; only https is allowed except "
            "to a loopback host (127.0.0.1, localhost, ::1), so the API key never crosses a network "
            "in clear"
        )
    netloc = parts.netloc
    if conn.port and not parts.port:
        netloc = f"{netloc}:{conn.port}"
    base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    return _Endpoint(base_url=base, api_key=key, api=endpoint_choice(conn), conn_id=conn_id)


def endpoint_choice(conn: Any) -> str:
    """The connection's ``endpoint`` extra: ``legacy`` (the default) or ``unified``."""
    conn_id = getattr(conn, "conn_id", None) or "?"
    try:
        extra = conn.extra_dejson or {}
    except Exception:  # a malformed extra: Airflow itself already logs it
        extra = {}
    choice = str(extra.get("endpoint") or DEFAULT_ENDPOINT).strip().lower()
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


def check_generation_id(generation_id: Any) -> str:
    """Return the id when it looks like one the service hands out, else raise KlingValidationError."""
    if not isinstance(generation_id, str) or not _GENERATION_ID_RE.match(generation_id.strip()):
        raise KlingValidationError(
            [
                (
                    "generation_id",
                    "must be a non-empty id as returned by the service (letters, digits and . _ : / = + -, "
                    f"at most 256 characters), got {generation_id!r}",
                )
            ]
        )
    if generation_id.strip() in ("None", "null"):
        # What a template renders when its value is missing, e.g. an XCom that was never pushed.
        raise KlingValidationError(
            [("generation_id", f"must be an id as returned by the service, got the text {generation_id!r}")]
        )
    return generation_id.strip()


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
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_ERRORS_BY_STATUS: dict[int, type[KlingAPIError]] = {
    400: KlingBadRequestError,
    401: KlingAuthError,
    403: KlingForbiddenError,
    404: KlingNotFoundError,
    429: KlingRateLimitError,
}


def _read_response(method: str, path: str, status: int, body: bytes, headers: Any) -> dict[str, Any]:
    """Turn one HTTP answer into its JSON body, or the provider's error for it."""
    if 200 <= status < 300:
        try:
            data = json.loads(body)
        except ValueError:
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
    except ValueError:
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
        message,
        request_id=str(request_id) if request_id else None,
        method=method,
        path=path,
        retry_after=_parse_retry_after(headers.get("Retry-After")),
    )


def _created_nothing(exc: BaseException) -> bool:
    """True when a failed POST surely created no generation, so sending it again cannot pay twice."""
    if isinstance(exc, KlingConnectionError):
        return exc.nothing_sent
    return isinstance(exc, KlingRateLimitError) or (isinstance(exc, KlingAPIError) and exc.status_code == 503)


def post_may_have_created(exc: BaseException) -> bool:
    """True when a failed POST may still have created (and charged for) a generation.

    That is a request that got no readable answer, or a 5xx other than 503: the service may have
    accepted it. Sending it again, by the hook or by an Airflow retry, could pay twice.
    """
    if isinstance(exc, KlingConnectionError):
        return not exc.nothing_sent
    if isinstance(exc, KlingAPIError) and not _created_nothing(exc):
        return exc.status_code >= 500 or 200 <= exc.status_code < 300
    return False


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, KlingConnectionError) or (isinstance(exc, KlingAPIError) and exc.retryable)


def _backoff(first: float, longest: float) -> wait_exponential_jitter:
    """Exponential backoff with jitter starting at ``first`` seconds, capped at ``longest``."""
    try:
        # Newer tenacity names the first wait ``multiplier`` and warns on ``initial`` at every call.
        return wait_exponential_jitter(multiplier=first, max=longest)
    except TypeError:  # older tenacity
        return wait_exponential_jitter(initial=first, max=longest)


def _connection_error(exc: BaseException, what: str, *, nothing_sent: bool) -> KlingConnectionError:
    return KlingConnectionError(f"{what}: {type(exc).__name__}: {exc}", nothing_sent=nothing_sent)


def _id_from_submit(body: dict[str, Any]) -> str:
    generation_id = body.get("id") or body.get("generation_id")
    if not generation_id:
        raise KlingServerError(
            200,
            f"the service accepted the generation but sent no id: {body!r}",
            method="POST",
            path=GENERATION_PATH,
        )
    return str(generation_id)


# Connection lookups in flight per (event loop, connection id); see KlingHook.aendpoint.
_ENDPOINT_LOOKUPS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, asyncio.Task[_Endpoint]]
] = weakref.WeakKeyDictionary()


def _forget(lookups: dict[str, Any], key: str, done: Any) -> None:
    if lookups.get(key) is done:
        del lookups[key]


# One aiohttp ClientSession per (event loop, connection id), shared by every trigger on that loop.
_ASYNC_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, list[Any]]] = (
    weakref.WeakKeyDictionary()
)


class KlingHook(BaseHook):
    """Talk to the Kling image-to-video API through an Airflow connection of type ``kling``.

    The connection's password is the API key; its host is optional (default
    ``https://api.apilaplas.com``) and may be a full URL. Plain http is accepted only to loopback hosts.

    :param kling_conn_id: the connection to use.
    :param timeout: (connect, read) timeout in seconds for each HTTP call.
    :param max_attempts: attempts per call for retryable failures (429, 5xx, network errors).
    :param retry_min_wait: first backoff wait in seconds; it doubles each retry, with jitter.
    :param retry_max_wait: longest backoff wait in seconds.
    :param pool_limit: most sockets the shared async session keeps open to the service.
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
    ) -> None:
        super().__init__()
        self.kling_conn_id = kling_conn_id
        self.timeout = timeout
        self.max_attempts = max(1, int(max_attempts))
        self.retry_min_wait = retry_min_wait
        self.retry_max_wait = retry_max_wait
        self.pool_limit = pool_limit
        self._endpoint: _Endpoint | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kling_conn_id={self.kling_conn_id!r})"

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

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Airflow 2's connection form: the endpoint choice (Airflow 3 reads provider info's conn-fields)."""
        try:
            from flask_appbuilder.fieldwidgets import Select2Widget
            from flask_babel import lazy_gettext
            from wtforms import SelectField
        except ImportError:  # Airflow 3 without the FAB UI
            return {}
        return {
            "endpoint": SelectField(
                lazy_gettext("Endpoint"),
                choices=[("legacy", "legacy (default)"), ("unified", "unified")],
                default="legacy",
                widget=Select2Widget(),
                description="legacy: /v2/generate/video/kling/generation; unified: /v2/video/generations",
            )
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
    def _retry_kwargs(self, method: str, attempts: int | None = None) -> dict[str, Any]:
        """The tenacity settings for one call; the same for the sync and async paths."""
        backoff = _backoff(self.retry_min_wait, self.retry_max_wait)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                return min(float(retry_after), MAX_RETRY_AFTER)
            return float(backoff(state))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0
            self.log.warning(
                "Kling %s failed (attempt %s of %s): %s; retrying in %.1f s",
                method,
                state.attempt_number,
                attempts or self.max_attempts,
                exc,
                sleep,
            )

        return {
            "retry": retry_if_exception(_created_nothing if method == "POST" else _transient),
            "stop": stop_after_attempt(attempts or self.max_attempts),
            "wait": wait,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    # ----------------------------------------------------------------------------- sync calls
    def _call(
        self,
        method: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        attempts: int | None = None,
        api: str | None = None,
    ) -> dict[str, Any]:
        endpoint = self.endpoint
        path = endpoint.path(api)
        url = endpoint.base_url + path
        for attempt in Retrying(**self._retry_kwargs(method, attempts)):
            with attempt:
                try:
                    resp = self.session.request(
                        method, url, params=params, json=json, headers=endpoint.headers, timeout=self.timeout
                    )
                    body = resp.content
                except (requests.exceptions.ConnectTimeout, requests.exceptions.ConnectionError) as exc:
                    refused = isinstance(exc, requests.exceptions.ConnectTimeout) or _is_refused(exc)
                    raise _connection_error(
                        exc, f"could not reach {endpoint.base_url}", nothing_sent=refused
                    ) from None
                except requests.exceptions.RequestException as exc:
                    raise _connection_error(
                        exc, f"no answer from {endpoint.base_url}", nothing_sent=False
                    ) from None
                return _read_response(method, path, resp.status_code, body, resp.headers)
        raise AssertionError("unreachable")  # pragma: no cover

    def submit(self, request: KlingRequest | dict[str, Any]) -> Generation:
        """Validate ``request`` and start a paid generation on the connection's endpoint.

        Retried only when the service surely created nothing (refused connection, 429, 503), never
        after a timeout or a dropped answer, so one call never pays twice.

        :param request: a :class:`~airflow_provider_kling.models.KlingRequest` or a dict of its fields.
        :return: the submit answer: the id, the first status and the usage billed at submit.
        """
        validated = resolve_file_inputs(build_request(request), self.log)
        payload = validated.payload(self.endpoint.api)
        body = self._call("POST", json=payload)
        generation = Generation.from_api(body, _id_from_submit(body))
        # Ids of the form "<uuid>:<model>" already name the model: say it once.
        model = "" if validated.model in generation.id else f"model {validated.model}, "
        self.log.info(
            "Kling generation %s submitted (%s%s endpoint)", generation.id, model, self.endpoint.api
        )
        return generation

    def submit_generation(self, request: KlingRequest | dict[str, Any]) -> str:
        """As :meth:`submit`, returning only the generation id."""
        return self.submit(request).id

    def get_generation(self, generation_id: str, *, api: str | None = None) -> Generation:
        """Poll a generation once (retrying transient failures).

        :param generation_id: the id :meth:`submit_generation` returned.
        :param api: the endpoint it was created on (default: the connection's).
        """
        generation_id = check_generation_id(generation_id)
        body = self._call("GET", params={"generation_id": generation_id}, api=check_api(api))
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
        :param timeout: seconds to wait in all before :class:`KlingGenerationTimeout`.
        :raises KlingGenerationFailed: the service ended it in error.
        """
        check_poll_settings(poll_interval, timeout)
        start = time.monotonic()
        deadline = start + timeout
        last: str | None = None
        while True:
            generation = self.get_generation(generation_id, api=api)
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
        except (KlingNotFoundError, KlingBadRequestError):
            return True, f"Connected to {endpoint.base_url}: the API key was accepted"
        except KlingConnectionError as exc:
            return False, f"Could not reach the Kling API: {exc}"
        except KlingConfigError as exc:
            return False, str(exc)
        except KlingAPIError as exc:
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
    ) -> str:
        """Stream a video to a local path or an ObjectStoragePath / fsspec URL in constant memory.

        The bytes go to a temporary name beside the target and are moved into place only when the
        count matches Content-Length and ``expected_size``; a failed try leaves nothing behind and
        the download is retried on network errors. The API key is never sent to the video's host.

        :param url: the video URL from the completed generation.
        :param destination: a file path, or a folder (existing, or written with a trailing ``/``).
        :param file_name: the name to use when ``destination`` is a folder.
        :param expected_size: the size the API announced (``file_size``).
        :param overwrite: replace an existing file instead of raising.
        :param attempts: tries in all for network failures.
        :return: the path (or URL) written.
        """
        target = resolve_destination(destination, file_name or _name_from_url(url))
        if target.exists() and not overwrite:
            raise KlingDownloadError(f"{target} already exists; pass overwrite=True to replace it")
        retry = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, KlingConnectionError)),
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
                written = self._download_once(url, target, expected_size)
        self.log.info("Downloaded %s bytes to %s", written, target)
        return str(target)

    def _open_following_redirects(self, url: str) -> requests.Response:
        for _ in range(_MAX_REDIRECTS + 1):
            if urlsplit(url).scheme not in ("http", "https"):
                raise KlingDownloadError(f"refusing to download from {url!r}: only http(s) URLs are followed")
            try:
                resp = self.session.get(url, stream=True, timeout=self.timeout, allow_redirects=False)
            except requests.exceptions.RequestException as exc:
                raise _connection_error(exc, "video download failed", nothing_sent=True) from None
            if resp.is_redirect:
                url = urljoin(url, resp.headers["Location"])
                resp.close()
                continue
            if resp.status_code >= 400:
                resp.close()
                error: type[Exception] = (
                    KlingConnectionError if resp.status_code >= 500 else KlingDownloadError
                )
                raise error(f"video download from {_redact_query(url)} answered {resp.status_code}")
            return resp
        raise KlingDownloadError(f"more than {_MAX_REDIRECTS} redirects downloading the video")

    def _download_once(self, url: str, target: Any, expected_size: int | None) -> int:
        resp = self._open_following_redirects(url)
        announced = resp.headers.get("Content-Length")
        tmp = _temporary_sibling(target)
        written = 0
        try:
            with resp, _open_for_write(tmp) as out:
                try:
                    for chunk in resp.iter_content(chunk_size=_CHUNK):
                        out.write(chunk)
                        written += len(chunk)
                except requests.exceptions.RequestException as exc:
                    raise _connection_error(exc, "video download dropped", nothing_sent=True) from None
            if announced is not None and written != int(announced):
                raise KlingConnectionError(
                    f"video download ended after {written} of {announced} bytes (Content-Length)"
                )
            if expected_size is not None and written != expected_size:
                raise KlingDownloadError(
                    f"video is {written} bytes but the API announced file_size {expected_size}; not kept"
                )
            _move_into_place(tmp, target)
        except BaseException:
            _remove_quietly(tmp)
            raise
        return written

    # ----------------------------------------------------------------------------- async calls
    @contextlib.asynccontextmanager
    async def async_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """Hold the event loop's shared aiohttp session for this connection while the block runs.

        Triggers wrap their whole life in this, so every poll of every trigger on a loop reuses one
        keep-alive pool; the session closes when its last holder leaves.
        """
        loop = asyncio.get_running_loop()
        per_loop = _ASYNC_SESSIONS.setdefault(loop, {})
        entry = per_loop.get(self.kling_conn_id)
        if entry is None or entry[0].closed:
            import aiohttp

            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_limit, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout[0], sock_read=self.timeout[1]
                ),
                headers={"User-Agent": _user_agent()},
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
    ) -> dict[str, Any]:
        import aiohttp

        endpoint = await self.aendpoint()
        path = endpoint.path(api)
        url = endpoint.base_url + path

        async def once(session: aiohttp.ClientSession) -> dict[str, Any]:
            try:
                async with session.request(method, url, params=params, headers=endpoint.headers) as resp:
                    body = await resp.read()
                    status, headers = resp.status, resp.headers
            except aiohttp.ClientConnectorError as exc:
                raise _connection_error(
                    exc, f"could not reach {endpoint.base_url}", nothing_sent=True
                ) from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise _connection_error(
                    exc, f"no answer from {endpoint.base_url}", nothing_sent=False
                ) from None
            return _read_response(method, path, status, body, headers)

        async with self.async_session() as session:
            # Fast path: a trigger polls thousands of times and nearly every poll succeeds; a tenacity
            # loop per poll leaves ~40 objects in reference cycles, and the garbage collector's full
            # passes over a triggerer's heap then stall every trigger on the loop.
            try:
                return await once(session)
            except Exception as exc:
                retryable = _created_nothing(exc) if method == "POST" else _transient(exc)
                if not retryable or (attempts or self.max_attempts) <= 1:
                    raise
                first_failure: Exception | None = exc
            # The same retry rules as ever: tenacity replays the failure above as its attempt 1.
            async for attempt in AsyncRetrying(**self._retry_kwargs(method, attempts)):
                with attempt:
                    if first_failure is not None:
                        failure, first_failure = first_failure, None
                        raise failure
                    return await once(session)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aget_generation(
        self, generation_id: str, *, attempts: int | None = None, api: str | None = None
    ) -> Generation:
        """Poll a generation once without blocking the event loop (for triggers).

        :param generation_id: the generation to read.
        :param attempts: attempts for transient failures (default: the hook's ``max_attempts``).
        :param api: the endpoint it was created on (default: the connection's).
        """
        generation_id = check_generation_id(generation_id)
        body = await self._acall(
            "GET", params={"generation_id": generation_id}, attempts=attempts, api=check_api(api)
        )
        return Generation.from_api(body, generation_id)


# --------------------------------------------------------------------------------- helpers
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


def _mask(secret: str) -> None:
    from airflow.providers.common.compat.sdk import mask_secret

    mask_secret(secret)


async def _amask(secret: str) -> None:
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow 2
        _mask(secret)
    else:
        await amask_secret(secret)


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


def _redact_query(url: str) -> str:
    """Video URLs are signed: keep the signature out of logs and errors."""
    return url.split("?", 1)[0]


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
        with path.open("wb") as out:
            yield out


def _move_into_place(tmp: Any, target: Any) -> None:
    if _is_local(tmp):
        os.replace(tmp, target)
    else:
        tmp.rename(target)


def _remove_quietly(path: Any) -> None:
    with contextlib.suppress(Exception):
        if path.exists():
            path.unlink()


__all__ = [
    "DEFAULT_BASE_URL",
    "GENERATION_PATH",
    "KlingHook",
    "check_generation_id",
    "check_poll_settings",
    "endpoint_from_connection",
    "post_may_have_created",
    "raise_for_terminal",
    "resolve_destination",
    "safe_file_name",
]
