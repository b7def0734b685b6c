"""The aiohttp application and in-memory state behind :class:`KlingEmulator`.

The emulator answers with the shapes documented for the Apilaplas Kling endpoints (see the package
docstring) and adds a control API under ``/_emulator`` so tests and demos in another process can
inspect requests, inject faults and force generations to finish.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import random
import secrets
import socket
import string
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from airflow_provider_kling import catalog

# Names now defined in their own modules, re-exported here (this module's public names stay).
from airflow_provider_kling.emulator.constants import (  # noqa: F401
    ANSWER_STYLES,
    API_PATH,
    API_PATHS,
    BLOB_PREFIX,
    CONTROL_PREFIX,
    ID_KEYS,
    ID_STYLES,
    REDIRECT_PATH,
    STATUS_STYLES,
    UNIFIED_PATH,
    USAGE_STYLES,
    VIDEO_PREFIX,
    _check_choice,
)
from airflow_provider_kling.emulator.media import (  # noqa: F401
    _BLOB_PATTERN,
    _BLOB_PERIOD,
    CHUNK,
    MAX_BLOB,
    SAMPLE_CHUNK,
    SAMPLE_PATH,
    _Body,
    _parse_range,
    blob_bytes,
)
from airflow_provider_kling.emulator.state import (  # noqa: F401
    _RECORD_FIELDS,
    ERROR_2026_MARKER,
    ERROR_MARKER,
    SECONDS_MARKER,
    Generation,
    RecordedRequest,
    _marker_text,
    _requested_duration,
)
from airflow_provider_kling.emulator.validation import (  # noqa: F401
    DURATIONS,
    KNOWN_MODELS,
    _duration_error,
    _field_error,
    _masks_error,
    _number_error,
    _string_error,
    _zod_type,
    validate_body,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 128 * 1024 * 1024

#: Faults that replace the answer entirely; on a POST they happen before anything is created.
PRE_FAULTS = frozenset({"403", "429", "500", "502", "503", "504", "reset", "non_json", "huge"})
#: Faults that mangle the real answer while it is sent, so the work behind it has been done.
BODY_FAULTS = frozenset({"reset_mid", "truncated", "wrong_length", "gzip", "dribble"})
FAULT_KINDS = PRE_FAULTS | BODY_FAULTS | {"slow"}

#: One line per fault kind (the CLI's --help and the package docs are checked against it).
FAULT_HELP: dict[str, str] = {
    "403": "403 'Insufficient credits or no access' in the service's error body",
    "429": "429 'Too many requests'; retry_after adds Retry-After (seconds, or a string sent verbatim)",
    "500": "500 'Internal server error' (retry_after as for 429)",
    "502": "502 'Bad gateway' (retry_after as for 429)",
    "503": "503 'Service unavailable' (retry_after as for 429)",
    "504": "504 'Generation timeout' (retry_after as for 429)",
    "reset": "the connection is dropped (TCP reset) before any answer",
    "reset_mid": "headers and half the body, then a TCP reset",
    "truncated": "Content-Length larger than the body sent, then an orderly close",
    "wrong_length": "a body short by 1000 bytes with a matching Content-Length (only file_size tells)",
    "non_json": "200 with an HTML page instead of JSON",
    "slow": "wait delay seconds (default 3), then answer normally",
    "gzip": "the answer sent with Content-Encoding: gzip when Accept-Encoding allows it "
    "(Content-Length is the compressed size; Range is ignored)",
    "dribble": "the answer sent a few bytes at a time, spread over delay seconds (default 3)",
    "huge": "200 with a JSON body of size bytes (default 80 MiB), streamed",
}

FACE_ERROR: dict[str, Any] = {
    "detail": [
        {"loc": ["body", "image_url"], "msg": "Could not detect face in the image", "type": "value_error"}
    ]
}
POLICY_ERROR_2026: dict[str, Any] = {
    "name": "ContentPolicyViolation",
    "message": "The prompt was rejected by the content policy",
}

_FAULT_MESSAGES = {
    403: "Insufficient credits or no access to this model",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Generation timeout",
}
TOKENS_PER_5S = 420_000
USD_PER_5S = 0.42
#: 2026 usage: credits billed at submit; 2,000,000 credits = 1 USD.
CREDITS_PER_5S_2026 = 840_000
CREDITS_PER_USD = 2_000_000
DEFAULT_SLOW_DELAY = 3.0
DEFAULT_HUGE_SIZE = 80 * 1024 * 1024
DRIBBLE_PIECE = 8
OPAQUE_ALPHABET = string.ascii_letters + string.digits
LISTEN_BACKLOG = 2048


@dataclass
class _Fault:
    kind: str
    remaining: int | None
    method: str | None = None
    path_prefix: str | None = None
    retry_after: float | str | None = None
    delay: float | None = None
    after_create: bool = False
    size: int | None = None

    def matches(self, method: str, path: str, api: bool) -> bool:
        if self.method is not None and self.method != method:
            return False
        # Without a prefix a fault targets the API endpoints only, never downloads.
        if self.path_prefix is None:
            return api
        return path.startswith(self.path_prefix)


@dataclass
class _Script(_Fault):
    """A scripted answer; ``kind`` is always "script"."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path_prefix": self.path_prefix,
            "times": self.remaining,
            "status": self.status,
            "headers": self.headers,
            "body_text": self.body.decode("utf-8", "replace"),
        }


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() in ("gzip", "*"):
            q = params.strip().replace(" ", "")
            return q not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _raise_nofile_limit() -> None:
    """Lift the open-files soft limit to the hard limit so 1,000+ sockets fit in one process."""
    try:
        import resource
    except ImportError:  # Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # e.g. macOS caps below RLIM_INFINITY
        log.debug("Could not raise RLIMIT_NOFILE from %s to %s: %s", soft, target, exc)


def _retry_after(value: Any) -> float | str | None:
    """A Retry-After setting: seconds as a float, or a string to send verbatim."""
    if value is None or isinstance(value, str):
        return value
    return float(value)


#: ``script(body=...)`` left out: an empty body.
_NO_BODY: Any = object()


class KlingEmulator:
    """A local emulator of the Apilaplas Kling video API (legacy and unified endpoints).

    :param api_key: the only bearer key accepted.
    :param host: interface to bind.
    :param port: TCP port; 0 picks a free one (see :attr:`base_url` after :meth:`start`).
    :param generation_seconds: time from creation to the final status; "queued" for the first 10%.
    :param status_style: ``"documented"`` (queued/generating/completed/error) or
        ``"alternate"`` (waiting/processing/succeeded/failed).
    :param id_style: ``"uuid"`` (``<uuid>:<model>``), ``"short"`` (``gen_ab12cd34``), ``"opaque"``
        (21 characters, ``QC4qjlUKt8ZedNi7r09LM``) or ``"numeric"`` (``789339022468063304``);
        default ``"uuid"``, or ``"opaque"`` with ``answer_style="2026"``.
    :param id_key: key carrying the id in the POST answer: ``"id"`` or ``"generation_id"``.
    :param usage_style: ``"tokens"`` (``tokens_used``) or ``"credits"`` (``credits_used``, ``usd_spent``);
        ignored with ``answer_style="2026"``.
    :param video_bytes: when set, finished videos are a blob of this many bytes instead of the sample MP4.
    :param answer_style: ``"2025"`` (the seed-era shapes) or ``"2026"`` (usage ``{credits_used,
        usd_spent}`` with 2,000,000 credits per USD on submit and poll; ``video`` only ``{url}`` with a
        signed-looking query). Omni models answer ``video`` as a list in either style.
    """

    def __init__(
        self,
        *,
        api_key: str = "emulator-key",
        host: str = "127.0.0.1",
        port: int = 0,
        generation_seconds: float = 2.0,
        status_style: str = "documented",
        id_style: str | None = None,
        id_key: str = "id",
        usage_style: str = "tokens",
        video_bytes: int | None = None,
        answer_style: str = "2025",
    ) -> None:
        _check_choice("answer_style", answer_style, ANSWER_STYLES)
        if id_style is None:
            id_style = "opaque" if answer_style == "2026" else "uuid"
        _check_choice("status_style", status_style, STATUS_STYLES)
        _check_choice("id_style", id_style, ID_STYLES)
        _check_choice("id_key", id_key, ID_KEYS)
        _check_choice("usage_style", usage_style, USAGE_STYLES)
        if video_bytes is not None and not 0 <= video_bytes <= MAX_BLOB:
            raise ValueError(f"video_bytes must be between 0 and {MAX_BLOB}")
        self._api_key = api_key
        self.host = host
        self.port = port
        self.generation_seconds = generation_seconds
        self.status_style = status_style
        self.id_style = id_style
        self.id_key = id_key
        self.usage_style = usage_style
        self.video_bytes = video_bytes
        self.answer_style = answer_style
        self.base_url = ""
        self._sample = SAMPLE_PATH.read_bytes()
        # Handlers run on the server's loop thread while tests read state from theirs.
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._generations: dict[str, Generation] = {}
        self._by_token: dict[str, Generation] = {}
        self._faults: list[_Fault] = []
        self._scripts: list[_Script] = []
        self._fault_counts: dict[str, int] = {}
        self._rate = 0.0
        self._rate_kinds: tuple[str, ...] = ()
        self._rate_methods: tuple[str, ...] = ()
        self._rate_faults: tuple[_Fault, ...] = ()
        self._rng = random.Random(0)
        self._next_ids: list[str] = []
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        # The key is deliberately left out.
        return (
            f"KlingEmulator(base_url={self.base_url!r}, status_style={self.status_style!r}, "
            f"answer_style={self.answer_style!r})"
        )

    # ------------------------------------------------------------------ Python control API

    @property
    def sample_size(self) -> int:
        """Size in bytes of the sample MP4 served for finished generations."""
        return len(self._sample)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every recorded request, oldest first."""
        with self._lock:
            return [dataclasses.replace(r) for r in self._requests]

    @property
    def generations(self) -> dict[str, Generation]:
        """A copy of the generation states, keyed by id."""
        with self._lock:
            return {k: dataclasses.replace(g) for k, g in self._generations.items()}

    @property
    def fault_counts(self) -> dict[str, int]:
        """How many times each fault kind has been applied."""
        with self._lock:
            return dict(self._fault_counts)

    @property
    def connection_count(self) -> int:
        """Number of client connections currently open on the server."""
        runner = self._runner
        if runner is None or runner.server is None:
            return 0
        return len(runner.server.connections)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """Count recorded requests.

        :param method: only this HTTP method.
        :param path: only paths equal to or starting with this.
        """
        with self._lock:
            return sum(
                1
                for r in self._requests
                if (method is None or r.method == method.upper())
                and (path is None or r.path.startswith(path))
            )

    def reset(self) -> None:
        """Forget recorded requests, generations, pending scripts, pending and random faults, counts."""
        with self._lock:
            self._requests.clear()
            self._generations.clear()
            self._by_token.clear()
            self._faults.clear()
            self._scripts.clear()
            self._fault_counts.clear()
            self._rate = 0.0
            self._next_ids.clear()

    def inject(
        self,
        kind: str,
        *,
        times: int | None = 1,
        method: str | None = None,
        path_prefix: str | None = None,
        retry_after: float | str | None = None,
        delay: float | None = None,
        after_create: bool = False,
        size: int | None = None,
    ) -> None:
        """Queue a fault for the next matching request(s).

        :param kind: one of :data:`FAULT_KINDS` (described in :data:`FAULT_HELP`).
        :param times: how many matching requests get it; None for all of them until :meth:`reset`.
        :param method: only requests with this method.
        :param path_prefix: only paths starting with this; None means the API endpoints only
            (use ``"/_emulator/videos"`` to hit downloads).
        :param retry_after: with ``429`` (or 5xx), the ``Retry-After`` header: seconds, or a string
            sent verbatim (an HTTP-date, or garbage).
        :param delay: with ``slow``, seconds to wait before answering; with ``dribble``, seconds the
            body takes (default 3 for both).
        :param after_create: on a POST, create the generation and then fail (an ambiguous failure).
        :param size: with ``huge``, the body's size in bytes (default 80 MiB).
        """
        kind = str(kind)
        _check_choice("kind", kind, sorted(FAULT_KINDS))
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if size is not None and not 0 <= int(size) <= MAX_BLOB:
            raise ValueError(f"size must be between 0 and {MAX_BLOB}")
        fault = _Fault(
            kind=kind,
            remaining=times,
            method=method.upper() if method else None,
            path_prefix=path_prefix,
            retry_after=_retry_after(retry_after),
            delay=None if delay is None else float(delay),
            after_create=after_create,
            size=None if size is None else int(size),
        )
        with self._lock:
            self._faults.append(fault)

    def script(
        self,
        *,
        method: str | None = None,
        path_prefix: str | None = None,
        times: int | None = 1,
        status: int = 200,
        body: Any = _NO_BODY,
        headers: Mapping[str, str] | None = None,
        body_bytes: bytes | None = None,
    ) -> None:
        """Make the next matching answer(s) anything: a scripted answer replaces the real one.

        Nothing else happens for a scripted request: no auth check, no validation, no generation
        created, no fault taken (it is recorded with ``scripted=True``). Scripts are used in order.

        :param method: only requests with this method (``"GET"``, ``"POST"``); None for any.
        :param path_prefix: only paths starting with this; None means the API endpoints only.
        :param times: how many matching requests get it; None for all of them until :meth:`reset`.
        :param status: the HTTP status.
        :param body: any JSON value, sent as JSON (``application/json``); raw ``bytes`` are sent as
            they are; left out, the body is empty.
        :param headers: extra headers, e.g. ``{"Content-Type": "text/plain", "Location": "..."}``.
        :param body_bytes: raw bytes to send instead of ``body``.
        """
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if not 100 <= int(status) <= 599:
            raise ValueError("status must be between 100 and 599")
        all_headers = {str(k): str(v) for k, v in (headers or {}).items()}
        if body_bytes is not None:
            data = bytes(body_bytes)
        elif isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif body is _NO_BODY:
            data = b""
        else:
            data = json.dumps(body).encode()
            if not any(k.lower() == "content-type" for k in all_headers):
                all_headers["Content-Type"] = "application/json"
        scripted = _Script(
            kind="script",
            remaining=times,
            method=method.upper() if method else None,
            path_prefix=path_prefix,
            status=int(status),
            body=data,
            headers=all_headers,
        )
        with self._lock:
            self._scripts.append(scripted)

    def set_fault_rate(
        self,
        rate: float,
        kinds: Iterable[str | Mapping[str, Any]] = ("500", "502", "503", "504"),
        *,
        seed: int | None = 0,
        methods: Iterable[str] = ("GET",),
    ) -> None:
        """Give each matching API request a random fault with probability ``rate`` (0 disables).

        :param rate: probability between 0 and 1.
        :param kinds: faults to choose from, uniformly: kind names, or mappings such as
            ``{"kind": "429", "retry_after": 0.2, "method": "POST"}`` (``method`` limits that entry to
            one HTTP method; ``retry_after``, ``delay`` and ``size`` as in :meth:`inject`).
        :param seed: seed of the random generator, for reproducible runs.
        :param methods: HTTP methods eligible for random faults.
        """
        faults = []
        for k in kinds:
            spec: dict[str, Any] = dict(k) if isinstance(k, Mapping) else {"kind": k}
            kind = str(spec.pop("kind", ""))
            _check_choice("kind", kind, sorted(FAULT_KINDS))
            unknown = set(spec) - {"method", "retry_after", "delay", "size"}
            if unknown:
                raise ValueError(f"unknown fault settings {sorted(unknown)}")
            method = spec.get("method")
            faults.append(
                _Fault(
                    kind=kind,
                    remaining=1,
                    method=str(method).upper() if method else None,
                    retry_after=_retry_after(spec.get("retry_after")),
                    delay=None if spec.get("delay") is None else float(spec["delay"]),
                    size=None if spec.get("size") is None else int(spec["size"]),
                )
            )
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if rate and not faults:
            raise ValueError("kinds must not be empty")
        with self._lock:
            self._rate = rate
            self._rate_kinds = tuple(f.kind for f in faults)
            self._rate_faults = tuple(faults)
            self._rate_methods = tuple(m.upper() for m in methods)
            self._rng = random.Random(seed)

    def queue_ids(self, *ids: str) -> None:
        """Hand out these ids, in order, to the next generations created (to try clients on odd ids).

        :param ids: the ids, used as given (even ``"x/../../etc"``).
        """
        with self._lock:
            self._next_ids.extend(str(i) for i in ids)

    def complete(self, generation_id: str) -> None:
        """Finish a generation now (with its requested outcome).

        :param generation_id: the id; raises KeyError when unknown.
        """
        now = time.monotonic()
        with self._lock:
            gen = self._generations[generation_id]
            gen.ready_at = min(gen.ready_at, now)
            gen.queued_until = min(gen.queued_until, now)

    # ------------------------------------------------------------------ server lifecycle

    def make_app(self) -> web.Application:
        """Build the aiohttp application (to serve it inside an existing loop or a test client)."""
        emulator = self

        @web.middleware
        async def service_errors(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            # Unknown routes and methods answer like the service does, in its error body.
            try:
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400 or request.path.startswith(CONTROL_PREFIX + "/"):
                    raise
                # Handlers never raise: this is routing (404/405) or an oversized body, not yet recorded.
                rec = emulator._record(request, None, None, None)
                return emulator._error(request, rec, exc.status, exc.reason)

        # Bodies may carry Base64 images of up to 50 MB (v3 models), as the service takes them.
        app = web.Application(middlewares=[service_errors], client_max_size=MAX_REQUEST_BYTES)
        for path in API_PATHS:
            app.router.add_post(path, self._handle_create)
            app.router.add_get(path, self._handle_poll)
        app.router.add_get(VIDEO_PREFIX + "/{token}/output.mp4", self._handle_video)
        app.router.add_get(BLOB_PREFIX + "/{nbytes}", self._handle_blob)
        app.router.add_get(REDIRECT_PATH, self._handle_redirect)
        app.router.add_get(CONTROL_PREFIX + "/health", self._ctl_health)
        app.router.add_get(CONTROL_PREFIX + "/requests", self._ctl_requests)
        app.router.add_get(CONTROL_PREFIX + "/counts", self._ctl_counts)
        app.router.add_post(CONTROL_PREFIX + "/reset", self._ctl_reset)
        app.router.add_get(CONTROL_PREFIX + "/faults", self._ctl_faults_get)
        app.router.add_post(CONTROL_PREFIX + "/faults", self._ctl_faults)
        app.router.add_post(CONTROL_PREFIX + "/fault-rate", self._ctl_fault_rate)
        app.router.add_get(CONTROL_PREFIX + "/script", self._ctl_script_get)
        app.router.add_post(CONTROL_PREFIX + "/script", self._ctl_script)
        app.router.add_get(CONTROL_PREFIX + "/generations", self._ctl_generations)
        # Ids contain "/" (``<uuid>:kling-video/v1/...``), hence the greedy pattern.
        app.router.add_post(CONTROL_PREFIX + "/generations/{gen_id:.+}/complete", self._ctl_complete)
        return app

    async def start_async(self) -> str:
        """Serve on the running event loop; return :attr:`base_url`."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        _raise_nofile_limit()
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=LISTEN_BACKLOG, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{port}"
        log.info("Kling emulator listening on %s", self.base_url)
        return self.base_url

    async def stop_async(self) -> None:
        """Stop serving (counterpart of :meth:`start_async`)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def start(self) -> str:
        """Serve from a daemon thread with its own event loop; return :attr:`base_url`."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="kling-emulator", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self.base_url

    def stop(self) -> None:
        """Stop the server started by :meth:`start` and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop_async(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            self._loop = self._thread = None

    def __enter__(self) -> KlingEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ request plumbing

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return hmac.compare_digest(token.strip().encode(), self._api_key.encode())

    def _take_script(self, method: str, path: str, api: bool) -> _Script | None:
        with self._lock:
            for i, scripted in enumerate(self._scripts):
                if scripted.matches(method, path, api):
                    if scripted.remaining is not None:
                        scripted.remaining -= 1
                        if scripted.remaining <= 0:
                            del self._scripts[i]
                    return scripted
        return None

    def _take_fault(self, method: str, path: str, api: bool) -> _Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if not fault.matches(method, path, api):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._faults[i]
                self._fault_counts[fault.kind] = self._fault_counts.get(fault.kind, 0) + 1
                return dataclasses.replace(fault)
            candidates = [f for f in self._rate_faults if f.method in (None, method)]
            if (
                api
                and self._rate > 0
                and method in self._rate_methods
                and candidates
                and self._rng.random() < self._rate
            ):
                chosen = self._rng.choice(candidates)
                self._fault_counts[chosen.kind] = self._fault_counts.get(chosen.kind, 0) + 1
                return dataclasses.replace(chosen)
        return None

    def _record(
        self, request: web.Request, body: Any, fault: _Fault | None, auth_ok: bool | None
    ) -> RecordedRequest:
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            json=body,
            time=time.time(),
            fault=fault.kind if fault else None,
            auth_ok=auth_ok,
            client_port=_client_port(request),
            retry_after=fault.retry_after if fault else None,
            endpoint=API_PATHS.get(request.path),
        )
        with self._lock:
            self._requests.append(rec)
        if fault:
            log.debug("Applying fault %s to %s %s", fault.kind, request.method, request.path)
        return rec

    def _error(
        self,
        request: web.Request,
        rec: RecordedRequest,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        body = {
            "message": message,
            "path": request.path,
            "requestId": str(uuid.uuid4()),
            "statusCode": status,
            "timestamp": _now_iso(),
        }
        rec.status = status
        return web.json_response(body, status=status, headers=headers)

    async def _fault_response(
        self, request: web.Request, rec: RecordedRequest, fault: _Fault
    ) -> web.StreamResponse:
        """Answer with a fault that replaces the real answer."""
        if fault.kind == "reset":
            await _drop(request, rst=True)
            return web.Response()
        if fault.kind == "non_json":
            rec.status = 200
            return web.Response(status=200, text="<html>Bad gateway</html>", content_type="text/html")
        if fault.kind == "huge":
            return await self._huge_response(
                request, rec, DEFAULT_HUGE_SIZE if fault.size is None else fault.size
            )
        status = int(fault.kind)
        headers = {}
        ra = fault.retry_after
        if isinstance(ra, str):
            headers["Retry-After"] = ra
        elif ra is not None:
            headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        return self._error(request, rec, status, _FAULT_MESSAGES[status], headers)

    async def _huge_response(
        self, request: web.Request, rec: RecordedRequest, size: int
    ) -> web.StreamResponse:
        """A 200 JSON answer of ``size`` bytes (valid JSON when size allows), streamed in chunks."""
        head, tail = b'{"id": "huge", "status": "queued", "padding": "', b'"}'
        if size < len(head) + len(tail):
            head, tail = b"", b""
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        resp.content_length = size
        await resp.prepare(request)
        rec.status = 200
        if request.method == "HEAD":
            return resp
        padding = b"a" * CHUNK
        with contextlib.suppress(ConnectionError):
            await resp.write(head)
            left = size - len(head) - len(tail)
            while left > 0:
                n = min(left, CHUNK)
                await resp.write(padding[:n])
                left -= n
            await resp.write(tail)
        return resp

    def _script_response(self, rec: RecordedRequest, scripted: _Script) -> web.Response:
        rec.status = scripted.status
        rec.scripted = True
        return web.Response(status=scripted.status, body=scripted.body, headers=scripted.headers)

    async def _answer(
        self,
        request: web.Request,
        rec: RecordedRequest,
        status: int,
        body: _Body,
        content_type: str,
        fault: _Fault | None,
        *,
        ranged: bool = False,
    ) -> web.StreamResponse:
        """Send ``body`` as the answer, honouring Range (downloads) and applying a pending fault."""
        if fault is not None and fault.kind in PRE_FAULTS:
            return await self._fault_response(request, rec, fault)
        kind = fault.kind if fault is not None else None
        start, stop = 0, body.size
        headers: dict[str, str] = {}
        if ranged:
            headers["Accept-Ranges"] = "bytes"
            rng = _parse_range(request.headers.get("Range"), body.size)
            if rng == "invalid":
                rec.status = 416
                return web.Response(status=416, headers={"Content-Range": f"bytes */{body.size}"})
            if isinstance(rng, tuple):
                start, stop = rng
                status = 206
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{body.size}"
        if kind == "gzip":
            if _accepts_gzip(request.headers.get("Accept-Encoding")):
                compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip container
                parts = [compressor.compress(chunk) for chunk in body.chunks(0, body.size)]
                parts.append(compressor.flush())
                headers.pop("Content-Range", None)
                headers["Content-Encoding"] = "gzip"
                rec.status = 200 if ranged else status
                return web.Response(
                    status=rec.status, body=b"".join(parts), content_type=content_type, headers=headers
                )
            kind = None
        if kind is None and body.data is not None and start == 0 and stop == body.size:
            rec.status = status
            return web.Response(status=status, body=body.data, content_type=content_type, headers=headers)

        length = stop - start
        announced = sent = length
        if kind == "wrong_length":
            announced = sent = length - min(1000, length // 2)
        elif kind in ("reset_mid", "truncated"):
            sent = length // 2
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_type = content_type
        resp.content_length = announced
        await resp.prepare(request)
        rec.status = status
        if request.method == "HEAD":
            return resp
        if kind == "dribble":
            await _dribble(resp, body.chunks(start, start + sent), sent, fault)
            return resp
        for chunk in body.chunks(start, start + sent):
            await resp.write(chunk)
        if kind in ("reset_mid", "truncated"):
            # reset_mid ends with a TCP RST, truncated with an orderly close: both short of Content-Length.
            await _drop(request, rst=kind == "reset_mid", flush=True)
        return resp

    async def _pre_handle(
        self, request: web.Request, body: Any, auth_ok: bool | None, api: bool
    ) -> tuple[RecordedRequest, _Fault | None, web.StreamResponse | None]:
        """Record the request and apply the script or fault parts that come before the real handling."""
        scripted = self._take_script(request.method, request.path, api)
        if scripted is not None:
            rec = self._record(request, body, None, auth_ok)
            return rec, None, self._script_response(rec, scripted)
        fault = self._take_fault(request.method, request.path, api)
        rec = self._record(request, body, fault, auth_ok)
        if fault is None:
            return rec, None, None
        if fault.kind == "slow":
            await asyncio.sleep(DEFAULT_SLOW_DELAY if fault.delay is None else fault.delay)
            return rec, None, None
        if fault.kind in PRE_FAULTS and not (fault.after_create and request.method == "POST"):
            return rec, None, await self._fault_response(request, rec, fault)
        return rec, fault, None

    def _usage(self, duration: int) -> dict[str, Any]:
        if self.answer_style == "2026":
            credits = CREDITS_PER_5S_2026 * duration // 5
            return {"credits_used": credits, "usd_spent": credits / CREDITS_PER_USD}
        tokens = TOKENS_PER_5S * duration // 5
        if self.usage_style == "credits":
            return {"credits_used": tokens, "usd_spent": round(USD_PER_5S * duration / 5, 2)}
        return {"tokens_used": tokens}

    def _new_id(self, model: str) -> str:
        if self._next_ids:
            return self._next_ids.pop(0)
        while True:
            if self.id_style == "short":
                gen_id = f"gen_{secrets.token_hex(4)}"
            elif self.id_style == "opaque":
                gen_id = "".join(secrets.choice(OPAQUE_ALPHABET) for _ in range(21))
            elif self.id_style == "numeric":
                gen_id = str(10**17 + secrets.randbelow(9 * 10**17))
            else:
                gen_id = f"{uuid.uuid4()}:{model}"
            if gen_id not in self._generations:
                return gen_id

    # ------------------------------------------------------------------ API handlers

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        parsed = True
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            parsed = False
        auth_ok = self._authorized(request)
        rec, fault, early = await self._pre_handle(request, body, auth_ok, api=True)
        if early is not None:
            return early
        if not auth_ok:
            return await self._json(request, rec, *self._unauthorized(request), fault)
        endpoint = API_PATHS[request.path]
        message = "Invalid JSON body" if not parsed else validate_body(body, endpoint)
        if message is not None:
            return await self._json(request, rec, 400, self._error_body(request, 400, message), fault)
        now = time.monotonic()
        prompt = _marker_text(body)
        duration = _requested_duration(body.get("duration"))
        seconds_marker = SECONDS_MARKER.search(prompt)
        seconds = float(seconds_marker.group(1)) if seconds_marker else self.generation_seconds
        if ERROR_2026_MARKER in prompt:
            outcome = "error_2026"
        elif ERROR_MARKER in prompt:
            outcome = "error"
        else:
            outcome = "completed"
        with self._lock:
            gen = Generation(
                id=self._new_id(body["model"]),
                model=body["model"],
                prompt=prompt,
                created_at=now,
                outcome=outcome,
                duration=duration,
                video_token=secrets.token_urlsafe(16),
                video_bytes=self.video_bytes,
                queued_until=now + 0.1 * seconds,
                ready_at=now + seconds,
                body=body,
                endpoint=endpoint,
                cache_key=secrets.token_urlsafe(12),
            )
            self._generations[gen.id] = gen
            self._by_token[gen.video_token] = gen
        log.debug("Created generation %s on the %s endpoint (outcome %s)", gen.id, endpoint, outcome)
        payload = {
            self.id_key: gen.id,
            "status": STATUS_STYLES[self.status_style][0],
            "meta": {"usage": self._usage(duration)},
        }
        return await self._json(request, rec, 201, payload, fault)

    async def _handle_poll(self, request: web.Request) -> web.StreamResponse:
        auth_ok = self._authorized(request)
        rec, fault, early = await self._pre_handle(request, None, auth_ok, api=True)
        if early is not None:
            return early
        if not auth_ok:
            return await self._json(request, rec, *self._unauthorized(request), fault)
        gen_id = request.query.get("generation_id")
        if not gen_id:
            body = self._error_body(request, 400, "generation_id: Required")
            return await self._json(request, rec, 400, body, fault)
        with self._lock:
            gen = self._generations.get(gen_id)
            gen = dataclasses.replace(gen) if gen is not None else None
        if gen is None:
            body = self._error_body(request, 404, "Generation not found")
            return await self._json(request, rec, 404, body, fault)
        phase = gen.phase(time.monotonic())
        names = STATUS_STYLES[self.status_style]
        video: dict[str, Any] | list[dict[str, Any]] | None = None
        error: dict[str, Any] | None = None
        status = names[phase]
        if phase == 2 and gen.outcome != "completed":
            status = names[3]
            error = POLICY_ERROR_2026 if gen.outcome == "error_2026" else FACE_ERROR
        elif phase == 2:
            video = self._video(request, gen)
        payload = {
            "id": gen.id,
            "status": status,
            "video": video,
            "error": error,
            "meta": {"usage": self._usage(gen.duration)},
        }
        return await self._json(request, rec, 200, payload, fault)

    def _video(self, request: web.Request, gen: Generation) -> dict[str, Any] | list[dict[str, Any]]:
        """The finished ``video`` field; a list for omni models."""
        url = f"{request.scheme}://{request.host}{VIDEO_PREFIX}/{gen.video_token}/output.mp4"
        video: dict[str, Any]
        if self.answer_style == "2026":
            ks_time = f"_{int(gen.created_at * 1000):x}"
            video = {"url": f"{url}?cacheKey={gen.cache_key}&ksTime={ks_time}"}
        else:
            video = {
                "url": url,
                "content_type": "video/mp4",
                "file_name": "output.mp4",
                "file_size": self.sample_size if gen.video_bytes is None else gen.video_bytes,
                "duration": gen.duration,
            }
        canonical = catalog.MODEL_ALIASES.get(gen.model, gen.model)
        return [video] if "omni" in canonical else video

    def _error_body(self, request: web.Request, status: int, message: str) -> dict[str, Any]:
        return {
            "message": message,
            "path": request.path,
            "requestId": str(uuid.uuid4()),
            "statusCode": status,
            "timestamp": _now_iso(),
        }

    def _unauthorized(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        has_header = "Authorization" in request.headers
        message = "Invalid API key" if has_header else "Missing API key: use 'Authorization: Bearer <key>'"
        return 401, self._error_body(request, 401, message)

    async def _json(
        self, request: web.Request, rec: RecordedRequest, status: int, payload: Any, fault: _Fault | None
    ) -> web.StreamResponse:
        data = json.dumps(payload).encode()
        return await self._answer(request, rec, status, _Body(data), "application/json", fault)

    async def _handle_video(self, request: web.Request) -> web.StreamResponse:
        rec, fault, early = await self._pre_handle(request, None, None, api=False)
        if early is not None:
            return early
        with self._lock:
            gen = self._by_token.get(request.match_info["token"])
            size = gen.video_bytes if gen is not None else None
        if gen is None:
            return self._error(request, rec, 404, "Not found")
        body = _Body(self._sample) if size is None else _Body(blob_size=size)
        return await self._answer(request, rec, 200, body, "video/mp4", fault, ranged=True)

    async def _handle_redirect(self, request: web.Request) -> web.StreamResponse:
        """``?to=URL[&hops=N][&status=30x]``: redirect to any URL (file://, ftp://, another redirect...).

        With ``hops`` > 1 it first redirects to itself N-1 times (a chain of N redirects; a large N
        stands for a loop).
        """
        rec, _fault, early = await self._pre_handle(request, None, None, api=False)
        if early is not None:
            return early
        target = request.query.get("to")
        if not target:
            return self._error(request, rec, 400, "to: Required")
        try:
            hops = int(request.query.get("hops", "1"))
            status = int(request.query.get("status", "302"))
        except ValueError:
            return self._error(request, rec, 400, "hops and status must be integers")
        if status not in (301, 302, 303, 307, 308) or hops < 1:
            return self._error(request, rec, 400, "status must be 301, 302, 303, 307 or 308; hops >= 1")
        if hops > 1:
            query = {"to": target, "hops": str(hops - 1), "status": str(status)}
            target = str(request.url.with_query(query))
        rec.status = status
        return web.Response(status=status, headers={"Location": target})

    async def _handle_blob(self, request: web.Request) -> web.StreamResponse:
        rec, fault, early = await self._pre_handle(request, None, None, api=False)
        if early is not None:
            return early
        try:
            nbytes = int(request.match_info["nbytes"])
        except ValueError:
            nbytes = -1
        if not 0 <= nbytes <= MAX_BLOB:
            return self._error(request, rec, 400, f"nbytes must be an integer between 0 and {MAX_BLOB}")
        body = _Body(blob_size=nbytes)
        return await self._answer(request, rec, 200, body, "application/octet-stream", fault, ranged=True)

    # ------------------------------------------------------------------ control handlers

    async def _ctl_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return web.json_response([r.as_dict() for r in self.requests])

    async def _ctl_counts(self, request: web.Request) -> web.Response:
        counts: dict[str, int] = {"POST": 0, "GET": 0}
        for r in self.requests:
            if r.path in API_PATHS:
                counts[r.method] = counts.get(r.method, 0) + 1
        return web.json_response(counts)

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _ctl_faults_get(self, request: web.Request) -> web.Response:
        with self._lock:
            pending = [dataclasses.asdict(f) for f in self._faults]
            rate = {"rate": self._rate, "kinds": list(self._rate_kinds), "methods": list(self._rate_methods)}
        return web.json_response({"pending": pending, "counts": self.fault_counts, "random": rate})

    async def _ctl_faults(self, request: web.Request) -> web.Response:
        try:
            params = await request.json()
            if not isinstance(params, dict) or "kind" not in params:
                raise ValueError("expected a JSON object with 'kind'")
            params = dict(params)
            self.inject(str(params.pop("kind")), **params)
        except (ValueError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _ctl_fault_rate(self, request: web.Request) -> web.Response:
        try:
            params = await request.json()
            if not isinstance(params, dict) or "rate" not in params:
                raise ValueError("expected a JSON object with 'rate'")
            params = dict(params)
            self.set_fault_rate(float(params.pop("rate")), **params)
        except (ValueError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _ctl_script_get(self, request: web.Request) -> web.Response:
        with self._lock:
            pending = [scripted.as_dict() for scripted in self._scripts]
        return web.json_response({"pending": pending})

    async def _ctl_script(self, request: web.Request) -> web.Response:
        # JSON: method, path_prefix, times, status, headers, and body (JSON) | body_text | body_base64.
        try:
            params = await request.json()
            if not isinstance(params, dict):
                raise ValueError("expected a JSON object")
            params = dict(params)
            unknown = set(params) - {
                "method",
                "path_prefix",
                "times",
                "status",
                "headers",
                "body",
                "body_text",
                "body_base64",
            }
            if unknown:
                raise ValueError(f"unknown script settings {sorted(unknown)}")
            raw: bytes | None = None
            if "body_base64" in params:
                raw = base64.b64decode(str(params.pop("body_base64")), validate=True)
            elif "body_text" in params:
                raw = str(params.pop("body_text")).encode()
            self.script(body_bytes=raw, **params)
        except (ValueError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _ctl_generations(self, request: web.Request) -> web.Response:
        return web.json_response({k: g.as_dict() for k, g in self.generations.items()})

    async def _ctl_complete(self, request: web.Request) -> web.Response:
        gen_id = request.match_info["gen_id"]
        try:
            self.complete(gen_id)
        except KeyError:
            return web.json_response({"ok": False, "error": "unknown generation"}, status=404)
        return web.json_response({"ok": True})


def _client_port(request: web.Request) -> int | None:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return peer[1] if isinstance(peer, (tuple, list)) and len(peer) >= 2 else None


async def _dribble(
    resp: web.StreamResponse, chunks: Iterable[bytes], length: int, fault: _Fault | None
) -> None:
    """Write ``length`` bytes a few at a time, spread over the fault's delay."""
    total = DEFAULT_SLOW_DELAY if fault is None or fault.delay is None else fault.delay
    steps = max(1, round(total / 0.02))
    piece = max(DRIBBLE_PIECE, math.ceil(length / steps))
    pause = total / max(1, math.ceil(length / piece))
    with contextlib.suppress(ConnectionError):
        for chunk in chunks:
            for pos in range(0, len(chunk), piece):
                await resp.write(chunk[pos : pos + piece])
                await asyncio.sleep(pause)


async def _drop(request: web.Request, *, rst: bool, flush: bool = False) -> None:
    """Close the client connection without finishing the answer."""
    transport = request.transport
    if transport is None:
        return
    if flush:
        # Let the bytes already written reach the client before the connection goes away.
        deadline = time.monotonic() + 2.0
        while transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout turns close() into a TCP reset.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
