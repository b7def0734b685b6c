"""What the emulator remembers: recorded requests and generations (a small state machine).

A :class:`Generation` goes ``queued`` -> ``generating`` -> finished on a clock set at creation; how it
finishes comes from markers in its prompt. :class:`EmulatorState` declares the attributes that hold
this state, which :class:`~airflow_provider_kling.emulator.server.KlingEmulator` sets and the handler
mixins share.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_kling.emulator.clips import ClipSpec

ERROR_MARKER = "[error]"
ERROR_2026_MARKER = "[error:2026]"
#: ``[seconds:N]`` in a prompt: this generation takes N seconds instead of ``generation_seconds``.
SECONDS_MARKER = re.compile(r"\[seconds:(\d+(?:\.\d+)?)\]")


@dataclass
class RecordedRequest:
    """One request the emulator received. The Authorization header is never stored.

    Supports ``rec["method"]`` as well as ``rec.method``.

    :param method: HTTP method.
    :param path: URL path without the query string.
    :param query: query parameters.
    :param json: the parsed JSON body, or None (no body, or not JSON).
    :param time: wall-clock arrival time (``time.time()``).
    :param fault: the fault kind applied to this request, or None.
    :param auth_ok: whether the bearer key matched; None on endpoints that need no key.
    :param status: the status code answered, or None when the connection was dropped before headers.
    :param client_port: the client's TCP source port (distinct ports = connections the client opened).
    :param retry_after: the Retry-After the applied fault sent (seconds or a verbatim string), or None.
    :param endpoint: ``"legacy"`` or ``"unified"`` for API requests, None for other paths.
    :param scripted: whether a scripted answer (:meth:`KlingEmulator.script`) replaced the real one.
    :param client_request_id: the valid ``X-Client-Request-Id`` sent (an invalid one is dropped: None).
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    time: float
    fault: str | None
    auth_ok: bool | None
    status: int | None = None
    client_port: int | None = None
    retry_after: float | str | None = None
    endpoint: str | None = None
    scripted: bool = False
    client_request_id: str | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in _RECORD_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(RecordedRequest))


@dataclass
class Generation:
    """State of one generation.

    :param id: the generation id handed to the client.
    :param model: requested model.
    :param prompt: requested prompt (or the first of ``multi_prompt``; "" when there is none).
    :param created_at: ``time.monotonic()`` at creation.
    :param outcome: ``"completed"``, ``"error"`` (detail shape) or ``"error_2026"`` (name/message shape).
    :param duration: the video's duration in seconds (its ``clip``'s; the usage is billed on it).
    :param video_token: opaque token in the video URL.
    :param video_bytes: size of the served blob, or None to serve the sample MP4.
    :param queued_until: monotonic time the status leaves "queued".
    :param ready_at: monotonic time the generation finishes.
    :param body: the request body as received.
    :param endpoint: the endpoint it was created on, ``"legacy"`` or ``"unified"``.
    :param cache_key: the signature-like query of its 2026-style video URL.
    :param usd: what it is billed when it completes (see
        :func:`~airflow_provider_kling.emulator.pricing.billed_usd`).
    :param created_wall: wall-clock creation time (``time.time()``), for the account's windows.
    :param client_request_id: the valid ``X-Client-Request-Id`` its submit carried, or None.
    :param request_id: the service-side id of its submit request (``request_id`` of its log row).
    :param clip: the clip it serves (duration, frame size, audio), or None for the stock sample MP4.
    """

    id: str
    model: str
    prompt: str
    created_at: float
    outcome: str
    duration: int
    video_token: str
    video_bytes: int | None
    queued_until: float
    ready_at: float
    body: dict[str, Any]
    endpoint: str = "legacy"
    cache_key: str = ""
    usd: float = 0.0
    created_wall: float = 0.0
    client_request_id: str | None = None
    request_id: str = ""
    clip: ClipSpec | None = None

    @property
    def finished_wall(self) -> float:
        """Wall-clock time it finishes (or finished): when its charge is recorded."""
        return self.created_wall + (self.ready_at - self.created_at)

    def billed_now(self, now: float) -> float:
        """USD charged at monotonic time ``now``: its price once completed, 0 while running or failed."""
        return self.usd if self.outcome == "completed" and self.phase(now) == 2 else 0.0

    def phase(self, now: float) -> int:
        """Return 0 (queued), 1 (generating) or 2 (finished)."""
        if now >= self.ready_at:
            return 2
        return 0 if now < self.queued_until else 1

    def as_dict(self) -> dict[str, Any]:
        """Return the state as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


class EmulatorState:
    """The state every part of the emulator shares; set by ``KlingEmulator.__init__``.

    Handlers run on the server's loop thread while tests read state from theirs: ``_lock`` guards it.
    """

    _api_key: str
    host: str
    port: int
    generation_seconds: float
    status_style: str
    id_style: str
    id_key: str
    usage_style: str
    video_bytes: int | None
    answer_style: str
    base_url: str
    _sample: bytes
    _lock: threading.Lock
    _requests: list[RecordedRequest]
    _generations: dict[str, Generation]
    _by_token: dict[str, Generation]
    _next_ids: list[str]

    @property
    def sample_size(self) -> int:
        """Size in bytes of the stock sample MP4 (served for every finished generation without PyAV)."""
        return len(self._sample)


def _marker_text(body: Mapping[str, Any]) -> str:
    """The text the outcome markers are read from: the prompt, else the first multi_prompt entry."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    shots = body.get("multi_prompt")
    if isinstance(shots, list) and shots:
        first = shots[0]
        if isinstance(first, dict):
            first = first.get("prompt")
        if isinstance(first, str):
            return first
    return ""


def _requested_duration(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 5
