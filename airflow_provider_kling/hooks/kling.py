"""Hook for the Kling image-to-video API (Apilaplas).

The sync path (requests) serves operators and sensors in poke mode; the async path (aiohttp) serves
triggers. Both share everything but the transport. This module holds the hook itself; its parts
live beside it, one job each:

- :mod:`._connection`: the endpoint from the connection, auth, key masking, user agent;
- :mod:`._errors`: answers to exceptions;
- :mod:`._retry`: the retry policy and the paid-POST rule;
- :mod:`._transport`: one sync and one async attempt, the async session pool;
- :mod:`._download`: the redirect-checked streaming download;
- :mod:`airflow_provider_kling.utils.urls`, ``.validation``, ``.storage``: URL and address policy
  with log redaction, argument checks, destinations and atomic writes.

Every name this module defined before the split is still importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import requests
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_kling.catalog import DEFAULT_ENDPOINT, ENDPOINT_PATHS
from airflow_provider_kling.exceptions import (
    KlingAuthError,
    KlingBadRequestError,
    KlingConfigError,  # noqa: F401 (importable from here, as before)
    KlingConnectionError,
    KlingDeadlineExceeded,
    KlingDownloadError,
    KlingError,
    KlingForbiddenError,
    KlingGenerationFailed,
    KlingGenerationTimeout,
    KlingNotFoundError,
    redact_urls,
)
from airflow_provider_kling.hooks import _download, _reconcile, _transport
from airflow_provider_kling.hooks._connection import (
    ALLOW_LOOPBACK_DOWNLOADS,
    DEFAULT_BASE_URL,
    GENERATION_PATH,
    _Endpoint,
    _mask,
    _user_agent,
    endpoint_choice,
    endpoint_from_connection,
    shared_endpoint,
)
from airflow_provider_kling.hooks._download import DOWNLOAD_TIMEOUT, _name_from_url
from airflow_provider_kling.hooks._errors import _id_from_submit
from airflow_provider_kling.hooks._peer import mount_peer_check
from airflow_provider_kling.hooks._request_id import CLIENT_REQUEST_ID_HEADER
from airflow_provider_kling.hooks._retry import (
    MAX_RETRY_AFTER,
    RetryPolicy,
    _backoff,
    _created_nothing,  # noqa: F401 (re-exported: batch imports it from here)
    attempt_budget,
    post_may_have_created,
)
from airflow_provider_kling.hooks._transport import MAX_RESPONSE_BYTES, Attempt
from airflow_provider_kling.models import (
    Generation,
    GenerationStatus,
    KlingRequest,
    build_request,
    resolve_file_inputs,
)
from airflow_provider_kling.utils.storage import resolve_destination, safe_file_name
from airflow_provider_kling.utils.urls import check_download_url, install_log_redaction
from airflow_provider_kling.utils.validation import (
    MAX_ID_LENGTH,
    check_api,
    check_generation_id,
    check_poll_settings,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine

    import aiohttp

    from airflow_provider_kling.cost.estimate import Estimate
    from airflow_provider_kling.cost.prices import Price

# Signed video URLs in urllib3's own debug lines are redacted from the moment the hook is imported.
install_log_redaction()


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
        # Per event loop: the shared session while this hook's ``async_session`` blocks run there, and
        # how many do; the last block of a loop to leave lets it go (see :meth:`_acall`).
        self._held_sessions: dict[asyncio.AbstractEventLoop, _transport.HeldSession] = {}

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
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Connection form fields for Airflow 2.11 to 3.1 (3.2+ reads the provider info's ``conn-fields``)."""
        from airflow_provider_kling.hooks._form import connection_form_widgets

        return connection_form_widgets()

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
        """As :attr:`endpoint`, reading the connection without blocking the event loop (hooks on one
        loop asking for the same connection at once share one lookup)."""
        if self._endpoint is None:
            self._endpoint = await shared_endpoint(self)
        return self._endpoint

    @cached_property
    def session(self) -> requests.Session:
        """The hook's one requests.Session (keep-alive pool). It carries no credentials itself."""
        session = requests.Session()
        session.headers["User-Agent"] = _user_agent()
        mount_peer_check(session)  # the address policy is checked on the address connected to
        return session

    def get_conn(self) -> requests.Session:
        """Return the hook's requests.Session."""
        return self.session

    # ----------------------------------------------------------------------------- retry rules
    def _retry_policy(
        self, method: str, attempts: int | None = None, deadline: float | None = None
    ) -> RetryPolicy:
        """The retry policy of one call; the same for the sync and async paths.

        :param deadline: a UNIX epoch float no retry may pass (see :class:`RetryPolicy`).
        """
        return RetryPolicy(
            method,
            attempts=attempts or self.max_attempts,
            min_wait=self.retry_min_wait,
            max_wait=self.retry_max_wait,
            deadline=deadline,
            log=self.log,
        )

    def _attempt(self, endpoint: _Endpoint, method: str, path: str, deadline: float | None) -> Attempt:
        """One try of a call: at most the call timeout, cut to the deadline's time left at this try."""
        return Attempt(endpoint, method, path, attempt_budget(self.call_timeout, deadline), self.timeout)

    # ----------------------------------------------------------------------------- sync calls
    def _call(
        self,
        method: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        attempts: int | None = None,
        api: str | None = None,
        deadline: float | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        endpoint = self.endpoint
        path = path or endpoint.path(api)
        return self._retry_policy(method, attempts, deadline).run(
            lambda: _transport.send(
                self.session,
                self._attempt(endpoint, method, path, deadline),
                headers,
                params=params,
                json=json,
            )
        )

    def submit(
        self,
        request: KlingRequest | dict[str, Any],
        *,
        client_request_id: str | None = None,
        reconcile: bool = True,
        estimate: Estimate | None = None,
    ) -> Generation:
        """Validate ``request`` and start a paid generation on the connection's endpoint.

        Retried only when the service surely created nothing (refused connection, failed TLS
        handshake, 429, 503), never after a timeout or a dropped answer, so one call never pays twice.
        With a ``client_request_id``, a POST whose answer was lost is looked up in ``/v2/logs``: found,
        the generation it created is returned (nothing paid again); not found by the connection's
        bound (``reconcile_window_seconds``, default 600), it is sent again. Where the service does
        not offer ``/v2/logs``, the lost answer's error is raised as before. With the connection extra
        ``daily_usd_cap`` set, the key's spend today plus this process's in-flight estimates plus this
        one must stay within it, or nothing is sent.

        :param request: a :class:`~airflow_provider_kling.models.KlingRequest` or a dict of its fields.
        :param client_request_id: sent as ``X-Client-Request-Id`` (see
            :func:`~airflow_provider_kling.hooks._request_id.client_request_id`); None sends none.
        :param reconcile: False to raise a lost answer's error at once (the batch looks its rows up
            together, without holding a thread).
        :param estimate: the request's estimate when already computed (see :meth:`estimate`).
        :raises KlingBudgetExceeded: the daily cap would be crossed (nothing was sent).
        :raises KlingBudgetUnknown: a daily cap is set but the price or the spend cannot be read.
        :raises KlingOutOfCreditsError: the service refused the POST for money (403).
        :return: the submit answer: the id, the first status and the usage billed at submit.
        :raises KlingUnusableIdError: the service accepted it but answered an id that cannot be polled.
        """
        from airflow_provider_kling.cost import budget

        validated = resolve_file_inputs(build_request(request), self.log)
        payload = validated.payload(self.endpoint.api)
        headers = {CLIENT_REQUEST_ID_HEADER: client_request_id} if client_request_id else None
        # The connection's daily cap holds before the money moves (None when it sets none).
        hold = (
            budget.reserve_daily(self, estimate or self.estimate(validated))
            if self.endpoint.daily_usd_cap
            else None
        )
        first_sent = time.time()
        sends = 0
        while True:
            sends += 1
            sent_at = time.time()
            try:
                body = self._call("POST", json=payload, headers=headers)
                break
            except KlingError as exc:
                if hold is not None and not post_may_have_created(exc):
                    hold.release()
                if isinstance(exc, KlingForbiddenError):
                    raise budget.money_refusal(exc, self.kling_conn_id, self.endpoint.daily_usd_cap) from None
                if not (client_request_id and reconcile and post_may_have_created(exc)):
                    raise
                found = _reconcile.find_lost_post(
                    self, exc, client_request_id, validated.model, first_sent, sent_at
                )
                if found is not None:
                    if hold is not None:
                        hold.bind(found.id)
                    return found
                if sends >= _reconcile.MAX_SENDS:
                    raise
                self.log.warning(
                    "Sending the request again (client request id %s): its earlier POST created nothing",
                    client_request_id,
                )
        generation = Generation.from_api(body, _id_from_submit(body, self.endpoint.path()))
        if hold is not None:
            hold.bind(generation.id)
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
        return self._seen(Generation.from_api(body, generation_id))

    def _seen(self, generation: Generation) -> Generation:
        """A generation seen ended: its charge is now the service's to report (see ``cost.budget``)."""
        if generation.status in (GenerationStatus.COMPLETED, GenerationStatus.FAILED) and self._endpoint:
            from airflow_provider_kling.cost.budget import generation_ended

            generation_ended(self._endpoint.base_url, generation.id)
        return generation

    # ----------------------------------------------------------------------------- prices
    def price(self, model: str) -> Price | None:
        """The price of ``model``: the connection's ``prices`` extra, else the service's catalogue
        (``GET /v1/models?include=pricing``, no key, kept per process and revalidated by ETag).

        :param model: a model id or alias.
        :return: the price, or None when neither gives one (never a guess).
        """
        from airflow_provider_kling.cost import prices

        return prices.price_for(model, self.endpoint, self.session, self.timeout)

    def estimate(self, request: KlingRequest | dict[str, Any]) -> Estimate:
        """What ``request`` is expected to cost, from :meth:`price` and the body as it is sent.

        :param request: a :class:`~airflow_provider_kling.models.KlingRequest` or a dict of its fields.
        :return: the estimate; its ``usd`` is None when the price is unknown or variable.
        """
        from airflow_provider_kling.cost.estimate import quote

        validated = request if isinstance(request, KlingRequest) else build_request(request)
        return quote(self.price(validated.model), validated.payload(self.endpoint.api))

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
        except KlingError as exc:  # a bad connection (KlingConfigError) among them
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

        The bytes land at the target only when the count matches Content-Length and
        ``expected_size`` (a local file through a temporary name beside it, an object through an
        upload committed only then); a failed try leaves nothing behind and the download is retried
        on network errors. The API key is never sent to the video's host.

        Only https URLs to public addresses are fetched, and every redirect hop is checked again:
        a host that resolves to a private, loopback, link-local, multicast or reserved address is
        refused before any connection, and the address each connection reaches is checked before
        anything is sent (a DNS answer that changes in between is refused too). The connection
        extra ``allow_loopback_downloads`` lets loopback hosts through (over http too), for the
        emulator.

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
        written = _download.download(
            self.session,
            url,
            target,
            expected_size=expected_size,
            allow_loopback=self.endpoint.allow_loopback_downloads,
            timeout=timeout,
            read_timeout=self.timeout,
            overwrite=overwrite,
            attempts=attempts,
            wait=_backoff(self.retry_min_wait, self.retry_max_wait),
            log=self.log,
        )
        self.log.info("Downloaded %s bytes to %s", written, target)
        return str(target)

    # ----------------------------------------------------------------------------- async calls
    @contextlib.asynccontextmanager
    async def async_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """Hold the event loop's shared aiohttp session for this connection while the block runs.

        Triggers wrap their whole life in this, so every poll of every trigger on a loop reuses one
        keep-alive pool; the session closes when its last holder leaves. The hook's calls inside the
        block use the session held, without taking it again at every poll. The session carries no
        timeouts: each request carries its own hook's (see :meth:`_acall`).
        """
        loop = asyncio.get_running_loop()
        async with _transport.shared_session(self.kling_conn_id, self.pool_limit) as session:
            held = self._held_sessions.setdefault(loop, _transport.HeldSession(session))
            held.holders += 1
            try:
                yield session
            finally:
                held.holders -= 1
                if not held.holders:
                    del self._held_sessions[loop]

    async def _acall(
        self,
        method: str,
        *,
        params: dict[str, str] | None = None,
        attempts: int | None = None,
        api: str | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        held = self._held_sessions.get(asyncio.get_running_loop())
        if held is None:  # outside an async_session block of this loop: hold the session for this call
            async with self.async_session():
                return await self._acall(method, params=params, attempts=attempts, api=api, deadline=deadline)
        endpoint = await self.aendpoint()
        return await self._retry_policy(method, attempts, deadline).arun(
            partial(self._atry, held.session, endpoint, method, endpoint.path(api), deadline, params)
        )

    def _atry(
        self,
        session: aiohttp.ClientSession,
        endpoint: _Endpoint,
        method: str,
        path: str,
        deadline: float | None,
        params: dict[str, str] | None,
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        """One try of an async call, its budget cut to the deadline's time left at this try.

        It returns asend's own coroutine (no wrapper coroutine per poll), and the retry policy gets
        it through a ``partial``, which holds fewer objects per poll in flight than a closure.
        """
        return _transport.asend(session, self._attempt(endpoint, method, path, deadline), params)

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
        return self._seen(Generation.from_api(body, generation_id))


def raise_for_terminal(generation: Generation) -> None:
    """Raise :class:`KlingGenerationFailed` when the service ended the generation in error."""
    if generation.status is GenerationStatus.FAILED:
        raise KlingGenerationFailed(generation.id, generation.error or "unknown error")


__all__ = [
    "ALLOW_LOOPBACK_DOWNLOADS",
    "DEFAULT_BASE_URL",
    "DEFAULT_ENDPOINT",
    "DOWNLOAD_TIMEOUT",
    "ENDPOINT_PATHS",
    "GENERATION_PATH",
    "MAX_ID_LENGTH",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER",
    "KlingHook",
    "check_api",
    "check_download_url",
    "check_generation_id",
    "check_poll_settings",
    "endpoint_choice",
    "endpoint_from_connection",
    "post_may_have_created",
    "raise_for_terminal",
    "redact_urls",
    "resolve_destination",
    "safe_file_name",
]
