"""Inspecting and steering a running emulator, from Python and over HTTP (``/_emulator/...``).

The Python side (:attr:`~ControlHandlers.requests`, :meth:`~ControlHandlers.count`,
:meth:`~ControlHandlers.reset`, :meth:`~ControlHandlers.complete`...) and the control routes that
expose it, with the fault engine's, to an emulator running in another process. No auth.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from airflow_provider_kling.emulator.account import AccountSettings, LogRow
from airflow_provider_kling.emulator.constants import API_PATHS
from airflow_provider_kling.emulator.faults import FaultsMixin
from airflow_provider_kling.emulator.media import video_data
from airflow_provider_kling.emulator.state import Generation, RecordedRequest


class ControlHandlers(FaultsMixin):
    """The Python control API of :class:`KlingEmulator` and its ``/_emulator`` routes."""

    _runner: web.AppRunner | None
    _account: AccountSettings
    _account_initial: AccountSettings
    _log_rows: list[LogRow]
    _logs_hits: collections.deque[float]

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
        """Forget recorded requests, generations, log rows, pending scripts, pending and random faults,
        counts; return the account settings to the constructor's."""
        with self._lock:
            self._requests.clear()
            self._generations.clear()
            self._by_token.clear()
            self._faults.clear()
            self._scripts.clear()
            self._fault_counts.clear()
            self._rate = 0.0
            self._next_ids.clear()
            self._log_rows.clear()
            self._logs_hits.clear()
            self._account = self._account_initial

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

    def video_data(self, generation_id: str) -> bytes:
        """The MP4 bytes served as this generation's video: its clip, or the sample MP4 without PyAV.

        A blob's bytes (``video_bytes``) are :func:`~airflow_provider_kling.emulator.media.blob_bytes`.

        :param generation_id: the id; raises KeyError when unknown.
        """
        with self._lock:
            clip = self._generations[generation_id].clip
        return video_data(clip, self._sample)

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
        return await _control_call(request, "kind", lambda kind, **rest: self.inject(str(kind), **rest))

    async def _ctl_fault_rate(self, request: web.Request) -> web.Response:
        return await _control_call(
            request, "rate", lambda rate, **rest: self.set_fault_rate(float(rate), **rest)
        )

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


async def _control_call(request: web.Request, key: str, call: Callable[..., Any]) -> web.Response:
    """Call ``call`` with the request's JSON object, which must hold ``key`` (400 with the reason if not)."""
    try:
        params = await request.json()
        if not isinstance(params, dict) or key not in params:
            raise ValueError(f"expected a JSON object with {key!r}")
        call(**params)
    except (ValueError, TypeError) as exc:
        return web.json_response({"ok": False, "error": str(exc)}, status=400)
    return web.json_response({"ok": True})
