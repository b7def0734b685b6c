"""The fault engine: which faults and scripted answers exist, queuing them and picking one per request.

:class:`FaultsMixin` holds the queue (:meth:`~FaultsMixin.inject`, :meth:`~FaultsMixin.script`,
:meth:`~FaultsMixin.set_fault_rate`) and takes the fault or script a request gets; how a fault then
shows on the wire is :mod:`airflow_provider_kling.emulator.answers`' job.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_kling.emulator.constants import _check_choice
from airflow_provider_kling.emulator.media import MAX_BLOB
from airflow_provider_kling.emulator.state import EmulatorState

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

_FAULT_MESSAGES = {
    403: "Insufficient credits or no access to this model",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Generation timeout",
}
DEFAULT_SLOW_DELAY = 3.0
DEFAULT_HUGE_SIZE = 80 * 1024 * 1024
DRIBBLE_PIECE = 8


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


def _retry_after(value: Any) -> float | str | None:
    """A Retry-After setting: seconds as a float, or a string to send verbatim."""
    if value is None or isinstance(value, str):
        return value
    return float(value)


#: ``script(body=...)`` left out: an empty body.
_NO_BODY: Any = object()


class FaultsMixin(EmulatorState):
    """Queued faults, scripted answers and random faults of a :class:`KlingEmulator`."""

    _faults: list[_Fault]
    _scripts: list[_Script]
    _fault_counts: dict[str, int]
    _rate: float
    _rate_kinds: tuple[str, ...]
    _rate_methods: tuple[str, ...]
    _rate_faults: tuple[_Fault, ...]
    _rng: random.Random

    @property
    def fault_counts(self) -> dict[str, int]:
        """How many times each fault kind has been applied."""
        with self._lock:
            return dict(self._fault_counts)

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
