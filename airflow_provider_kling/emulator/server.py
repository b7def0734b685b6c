"""The emulator's server: :class:`KlingEmulator`, its aiohttp application and its lifecycle.

Start and stop it from a thread of its own (:meth:`~KlingEmulator.start`, or ``with``) or on a running
event loop (:meth:`~KlingEmulator.start_async`). The handlers come from the mixins: the service's API
(:mod:`~airflow_provider_kling.emulator.api`), downloads (:mod:`~airflow_provider_kling.emulator.downloads`)
the account side (:mod:`~airflow_provider_kling.emulator.account`) and the control API
(:mod:`~airflow_provider_kling.emulator.control`).
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from airflow_provider_kling.emulator.account import AccountSettings
from airflow_provider_kling.emulator.api import ApiHandlers
from airflow_provider_kling.emulator.constants import (
    ANSWER_STYLES,
    API_PATHS,
    BLOB_PREFIX,
    CONTROL_PREFIX,
    ID_KEYS,
    ID_STYLES,
    LOGS_PATH,
    MODEL_PATH_PREFIX,
    MODELS_PATH,
    REDIRECT_PATH,
    STATUS_STYLES,
    USAGE_PATH,
    USAGE_STYLES,
    VIDEO_PREFIX,
    _check_choice,
    log,
)
from airflow_provider_kling.emulator.control import ControlHandlers
from airflow_provider_kling.emulator.downloads import DownloadHandlers
from airflow_provider_kling.emulator.faults import _Fault, _Script
from airflow_provider_kling.emulator.media import MAX_BLOB, SAMPLE_PATH
from airflow_provider_kling.emulator.state import Generation, RecordedRequest

MAX_REQUEST_BYTES = 128 * 1024 * 1024
LISTEN_BACKLOG = 2048


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


class KlingEmulator(ApiHandlers, DownloadHandlers, ControlHandlers):
    """A local emulator of the Apilaplas Kling video API (legacy and unified endpoints).

    :param api_key: the only bearer key accepted.
    :param host: interface to bind.
    :param port: TCP port; 0 picks a free one (see :attr:`base_url` after :meth:`start`).
    :param generation_seconds: time from creation to the final status of a 5 s clip of a reference
        model (v1 standard, 4-5 minutes on the service); other models and lengths take their documented
        times in proportion (v2/v2.1 master 5-6 minutes, v2.1 pro 3-4, twice that for 10 s, see
        :func:`~airflow_provider_kling.emulator.clips.generation_seconds`). "queued" for the first 10%.
    :param status_style: ``"documented"`` (queued/generating/completed/error) or
        ``"alternate"`` (waiting/processing/succeeded/failed).
    :param id_style: ``"uuid"`` (``<uuid>:<model>``), ``"short"`` (``gen_ab12cd34``), ``"opaque"``
        (21 characters, ``QC4qjlUKt8ZedNi7r09LM``) or ``"numeric"`` (``789339022468063304``);
        default ``"uuid"``, or ``"opaque"`` with ``answer_style="2026"``.
    :param id_key: key carrying the id in the POST answer: ``"id"`` or ``"generation_id"``.
    :param usage_style: ``"tokens"`` (``tokens_used``) or ``"credits"`` (``credits_used``, ``usd_spent``);
        ignored with ``answer_style="2026"``.
    :param video_bytes: when set, finished videos are a blob of this many bytes instead of a clip.
    :param answer_style: ``"2025"`` (the seed-era shapes) or ``"2026"`` (usage ``{credits_used,
        usd_spent}`` with 2,000,000 credits per USD on submit and poll; ``video`` only ``{url}`` with a
        signed-looking query). Omni models answer ``video`` as a list in either style.
    :param account: the account side's settings (the fields of
        :class:`~airflow_provider_kling.emulator.account.AccountSettings`: ``disabled``, ``logs_delay``,
        ``usage_delay``, ``spending_limit``, ``spending_retention``, ``logs_rate_limit``,
        ``logs_rate_window``); :meth:`reset` returns to them.
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
        account: Mapping[str, Any] | None = None,
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
        self._account_initial = AccountSettings().updated(**dict(account or {}))
        self._account = self._account_initial
        self._log_rows = []
        self._logs_hits = collections.deque()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        # The key is deliberately left out.
        return (
            f"KlingEmulator(base_url={self.base_url!r}, status_style={self.status_style!r}, "
            f"answer_style={self.answer_style!r})"
        )

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
        app.on_response_prepare.append(self._on_prepare)
        for path in API_PATHS:
            app.router.add_post(path, self._handle_create)
            app.router.add_get(path, self._handle_poll)
        # The service's routes, then the control routes the tests drive (CONTROL_PREFIX).
        service = [
            (MODELS_PATH, self._handle_models),
            (MODEL_PATH_PREFIX + "{model_id:.+}", self._handle_model),
            (USAGE_PATH, self._handle_usage),
            (LOGS_PATH, self._handle_logs),
            (VIDEO_PREFIX + "/{token}/output.mp4", self._handle_video),
            (BLOB_PREFIX + "/{nbytes}", self._handle_blob),
            (REDIRECT_PATH, self._handle_redirect),
        ]
        for path, handler in service:
            app.router.add_get(path, handler)
        control = {
            "/health": (self._ctl_health, None),
            "/requests": (self._ctl_requests, None),
            "/counts": (self._ctl_counts, None),
            "/reset": (None, self._ctl_reset),
            "/faults": (self._ctl_faults_get, self._ctl_faults),
            "/fault-rate": (None, self._ctl_fault_rate),
            "/script": (self._ctl_script_get, self._ctl_script),
            "/generations": (self._ctl_generations, None),
            "/account": (self._ctl_account_get, self._ctl_account),
            # Ids contain "/" (``<uuid>:kling-video/v1/...``), hence the greedy pattern.
            "/generations/{gen_id:.+}/complete": (None, self._ctl_complete),
        }
        for path, (get, post) in control.items():
            if get is not None:
                app.router.add_get(CONTROL_PREFIX + path, get)
            if post is not None:
                app.router.add_post(CONTROL_PREFIX + path, post)
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
