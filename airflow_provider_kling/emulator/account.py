"""The account side of the service: the priced catalogue, spend, request logs, tracing and a spending limit.

Routes (as ``shared/api/ACCOUNT.md`` describes them): ``GET /v1/models[?id=ID]&include=pricing`` and
``GET /model/ID?include=pricing`` (no key; ``ETag``, 304 on ``If-None-Match``), ``GET /v2/usage`` and
``GET /v2/logs`` (the key's own spend and one row per submit). Every answer outside ``/_emulator``
carries ``x-inference-id``, the echoed ``x-client-request-id`` when the one sent is valid, and, on
JSON answers, ``x-aimlapi-credits-used`` / ``x-aimlapi-usd-spent``. Prices come from
:mod:`~airflow_provider_kling.emulator.pricing`. :class:`AccountSettings` turns each route or header
off and sets the analytics delays, the logs rate limit and the key's spending limit.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import math
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from airflow_provider_kling.emulator import pricing
from airflow_provider_kling.emulator.answers import REC_KEY, Responder, request_key
from airflow_provider_kling.emulator.constants import (
    ACCOUNT_SWITCHES,
    CONTROL_PREFIX,
    valid_client_request_id,
)
from airflow_provider_kling.emulator.faults import _Fault
from airflow_provider_kling.emulator.state import Generation, RecordedRequest

RETENTIONS = ("no_reset", "day", "week", "month")
LOG_STATUSES = ("succeeded", "failed")
MAX_WINDOW = timedelta(days=92)
PERIOD = re.compile(r"([1-9][0-9]*)([hd])")
OUT_OF_CREDITS = (
    "You've run out of credits. Please top up your balance or update your payment method to continue: {url}"
)
#: Keys of ``request`` (an aiohttp request is a mapping) that handlers fill for the header hook.
INFERENCE_KEY = request_key("kling_emulator.inference_id", str)
COST_KEY = request_key("kling_emulator.usd", float)
HEADERS_KEY = request_key("kling_emulator.headers", dict)
#: The emulator's tokens figure for a second of video (a log row's ``tokens``).
TOKENS_PER_SECOND = 84_000


@dataclass(frozen=True)
class AccountSettings:
    """How the account side behaves; change it with ``KlingEmulator.configure_account(...)``.

    :param disabled: route or feature -> the status its routes answer instead (404 or 405). Names:
        ``models`` (both catalogue routes), ``usage``, ``logs`` (routes); ``client_request_id`` (no
        echo, no ``client_request_id`` in log rows), ``cost_headers``, ``inference_id`` (headers).
    :param logs_delay: seconds before a submit's row appears in ``/v2/logs`` (analytics lag).
    :param usage_delay: seconds before a completed generation's charge appears in ``/v2/usage``.
    :param spending_limit: the key's limit in USD (None: no limit); a submit that would cross it,
        counting what is charged or held in the current period, answers 403.
    :param spending_retention: when the spent amount starts again: ``no_reset``, ``day``, ``week``
        or ``month`` (UTC).
    :param logs_rate_limit: ``/v2/logs`` requests allowed per ``logs_rate_window`` seconds (429 beyond).
    :param logs_rate_window: the rate limit's sliding window in seconds.
    """

    disabled: Mapping[str, int] = dataclasses.field(default_factory=dict)
    logs_delay: float = 0.0
    usage_delay: float = 0.0
    spending_limit: float | None = None
    spending_retention: str = "no_reset"
    logs_rate_limit: int = 200
    logs_rate_window: float = 60.0

    def updated(self, **changes: Any) -> AccountSettings:
        """A copy with ``changes`` applied, each checked; a ValueError names a bad one.

        :param changes: any of the fields; ``disabled`` may also be a list of names (each 404).
        """
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown account settings {sorted(unknown)}")
        if "disabled" in changes:
            changes["disabled"] = _disabled(changes["disabled"])
        for name in ("logs_delay", "usage_delay", "logs_rate_window"):
            if name in changes:
                changes[name] = float(changes[name])
                if changes[name] < 0 or (name == "logs_rate_window" and changes[name] == 0):
                    raise ValueError(f"{name} must be {'> 0' if name == 'logs_rate_window' else '>= 0'}")
        if changes.get("spending_limit") is not None:
            changes["spending_limit"] = float(changes["spending_limit"])
            if changes["spending_limit"] < 0:
                raise ValueError("spending_limit must be >= 0 USD or None")
        if "spending_retention" in changes and changes["spending_retention"] not in RETENTIONS:
            raise ValueError(f"spending_retention must be one of {RETENTIONS}")
        if "logs_rate_limit" in changes:
            changes["logs_rate_limit"] = int(changes["logs_rate_limit"])
            if changes["logs_rate_limit"] < 1:
                raise ValueError("logs_rate_limit must be >= 1")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict (what ``GET /_emulator/account`` answers)."""
        return {**dataclasses.asdict(self), "disabled": dict(self.disabled)}


def _disabled(value: Mapping[str, Any] | Iterable[str] | None) -> dict[str, int]:
    items = value.items() if isinstance(value, Mapping) else ((name, 404) for name in (value or ()))
    disabled = {}
    for name, status in items:
        if name not in ACCOUNT_SWITCHES:
            raise ValueError(f"disabled: {name!r} is not one of {ACCOUNT_SWITCHES}")
        if int(status) not in (404, 405):
            raise ValueError(f"disabled: {name} must answer 404 or 405, not {status}")
        disabled[str(name)] = int(status)
    return disabled


@dataclass
class LogRow:
    """One submit as ``/v2/logs`` lists it; an accepted one takes its status and cost from its generation.

    :param created: wall-clock time of the submit.
    :param model: the model as sent.
    :param request_id: the service-side request id.
    :param client_request_id: the valid ``X-Client-Request-Id`` sent, or None.
    :param generation_id: the generation created (``inference_id``), None for a refused submit.
    """

    created: float
    model: str
    request_id: str
    client_request_id: str | None
    generation_id: str | None = None


def parse_window(query: MultiMapping[str], now: float) -> tuple[float, float]:
    """The window of ``/v2/usage`` and ``/v2/logs`` as wall-clock (start, end).

    :param query: ``period`` (``24h``, ``7d``...) or both ``start`` and ``end`` (ISO-8601, UTC when
        no offset is given); at most 92 days.
    :param now: the current wall-clock time.
    :raises ValueError: with a message naming the parameter and what is allowed.
    """
    period, start, end = query.get("period"), query.get("start"), query.get("end")
    if period is not None:
        if start is not None or end is not None:
            raise ValueError("period: give either period or start and end, not both")
        match = PERIOD.fullmatch(period)
        if match is None:
            raise ValueError("period: must be a positive integer followed by h or d (e.g. 24h, 7d)")
        number, unit = int(match.group(1)), match.group(2)
        span = timedelta(hours=number) if unit == "h" else timedelta(days=number)
        if span > MAX_WINDOW:
            raise ValueError("period: the window is at most 92 days")
        return now - span.total_seconds(), now
    if start is None or end is None:
        raise ValueError("start, end: give both (ISO-8601), or period (e.g. 24h, 7d)")
    first, last = _instant("start", start), _instant("end", end)
    if first >= last:
        raise ValueError("start: must be before end")
    if timedelta(seconds=last - first) > MAX_WINDOW:
        raise ValueError("start, end: the window is at most 92 days")
    return first, last


def _instant(name: str, text: str) -> float:
    try:
        # "Z" is read here too (fromisoformat takes it only from Python 3.11).
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValueError(f"{name}: must be an ISO-8601 date or time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _iso(moment: float) -> str:
    text = datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _int_param(query: MultiMapping[str], name: str, default: int, low: int, high: int | None) -> int:
    text = query.get(name)
    if text is None:
        return default
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}: must be {allowed}") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name}: must be {allowed}")
    return value


def period_start(retention: str, now: float) -> float:
    """Wall-clock start of the current spending period (UTC day, ISO week, month; 0 for no_reset).

    :param retention: one of :data:`RETENTIONS`.
    :param now: the current wall-clock time.
    """
    if retention == "no_reset":
        return 0.0
    today = datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    if retention == "week":
        today -= timedelta(days=today.weekday())
    elif retention == "month":
        today = today.replace(day=1)
    return today.timestamp()


class AccountHandlers(Responder):
    """The account routes, the per-answer tracing and cost headers, and the spending limit."""

    _account: AccountSettings
    _account_initial: AccountSettings
    _log_rows: list[LogRow]
    _logs_hits: collections.deque[float]

    # ------------------------------------------------------------------ the key (API and account)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return hmac.compare_digest(token.strip().encode(), self._api_key.encode())

    def _unauthorized(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        has_header = "Authorization" in request.headers
        message = "Invalid API key" if has_header else "Missing API key: use 'Authorization: Bearer <key>'"
        return 401, self._error_body(request, 401, message)

    async def _start_keyed(
        self, request: web.Request, body: Any, *, api: bool
    ) -> tuple[RecordedRequest, _Fault | None, web.StreamResponse | None]:
        """Record a request to a keyed route, apply the script or fault parts that come first, then
        refuse a missing or wrong key (the answer that ends the request is the third item)."""
        auth_ok = self._authorized(request)
        rec, fault, early = await self._pre_handle(request, body, auth_ok, api=api)
        if early is None and not auth_ok:
            early = await self._json(request, rec, *self._unauthorized(request), fault)
        return rec, fault, early

    # ------------------------------------------------------------------ Python control

    @property
    def account_settings(self) -> AccountSettings:
        """The account side's current settings."""
        with self._lock:
            return self._account

    def configure_account(self, **changes: Any) -> AccountSettings:
        """Change the account side's settings (see :class:`AccountSettings`); :meth:`reset` restores
        the ones given to the constructor.

        :param changes: e.g. ``disabled=["logs"]``, ``logs_delay=5``, ``spending_limit=1.5``,
            ``spending_retention="day"``, ``logs_rate_limit=3``.
        :return: the new settings.
        """
        with self._lock:
            self._account = self._account.updated(**changes)
            return self._account

    @property
    def log_rows(self) -> list[dict[str, Any]]:
        """Every submit's log row, visible or not yet (newest first), as ``/v2/logs`` shows them."""
        with self._lock:
            return [self._row(row, time.monotonic()) for row in reversed(self._log_rows)]

    # ------------------------------------------------------------------ used by the API handlers

    def _spent(self, since: float, now: float) -> float:
        """USD charged or held since ``since`` (wall clock): completed and running generations;
        a failed one is rolled back. Call with the lock held."""
        return sum(
            g.usd
            for g in self._generations.values()
            if g.created_wall >= since and not (g.phase(now) == 2 and g.outcome != "completed")
        )

    def _refusal(self, request: web.Request, usd: float) -> str | None:
        """The 403 message when a submit billed ``usd`` would cross the spending limit, else None.
        Call with the lock held."""
        settings = self._account
        if settings.spending_limit is None:
            return None
        spent = self._spent(period_start(settings.spending_retention, time.time()), time.monotonic())
        if spent + usd <= settings.spending_limit + 1e-9:
            return None
        return OUT_OF_CREDITS.format(url=f"{request.scheme}://{request.host}{CONTROL_PREFIX}/account")

    def _log_submit(self, request: web.Request, model: str, gen: Generation | None) -> None:
        """Keep the log row of an authenticated submit (refused ones are failed rows). Lock held."""
        rec: RecordedRequest | None = request.get(REC_KEY)
        self._log_rows.append(
            LogRow(
                created=gen.created_wall if gen is not None else time.time(),
                model=model,
                request_id=gen.request_id if gen is not None else str(uuid.uuid4()),
                client_request_id=rec.client_request_id if rec is not None else None,
                generation_id=gen.id if gen is not None else None,
            )
        )

    @staticmethod
    def _trace(request: web.Request, inference_id: str | None, usd: float) -> None:
        """What the header hook puts on this answer: its inference id and its cost."""
        if inference_id is not None:
            request[INFERENCE_KEY] = inference_id
        request[COST_KEY] = usd

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the tracing and cost headers to every answer outside ``/_emulator`` (not to scripts)."""
        if request.path.startswith(CONTROL_PREFIX + "/"):
            return
        rec: RecordedRequest | None = request.get(REC_KEY)
        if rec is not None and rec.scripted:
            return
        disabled = self._account.disabled
        response.headers.update(request.get(HEADERS_KEY, {}))
        inference_id = request.get(INFERENCE_KEY) or str(uuid.uuid4())
        # A hostile id (the tests script ids with CR/LF) cannot travel in a header: it goes only in the body.
        if "inference_id" not in disabled and inference_id.isascii() and inference_id.isprintable():
            response.headers.setdefault("x-inference-id", inference_id)
        sent = valid_client_request_id(request.headers.get("X-Client-Request-Id"))
        if sent is not None and "client_request_id" not in disabled:
            response.headers["x-client-request-id"] = sent
        if "cost_headers" not in disabled and response.content_type == "application/json":
            usd = float(request.get(COST_KEY, 0.0))
            response.headers["x-aimlapi-credits-used"] = str(pricing.credits(usd))
            response.headers["x-aimlapi-usd-spent"] = f"{pricing.credits(usd) / pricing.CREDITS_PER_USD:.6f}"

    # ------------------------------------------------------------------ routes

    async def _turned_off(self, request: web.Request, name: str) -> web.StreamResponse | None:
        status = self._account.disabled.get(name)
        if status is None:
            return None
        rec = self._record(request, None, None, None)
        return self._error(request, rec, status, f"Cannot {request.method} {request.path}")

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        started = await self._account_read(request, "models", auth=False)
        if isinstance(started, web.StreamResponse):
            return started
        rec, fault = started
        wanted = request.query.get("id")
        entries = pricing.catalogue() if wanted is None else [e for e in [pricing.model_entry(wanted)] if e]
        data = [self._shown(request, e) for e in entries]
        return await self._cached(request, rec, {"object": "list", "data": data}, fault)

    async def _handle_model(self, request: web.Request) -> web.StreamResponse:
        started = await self._account_read(request, "models", auth=False)
        if isinstance(started, web.StreamResponse):
            return started
        rec, fault = started
        entry = pricing.model_entry(request.match_info["model_id"])
        if entry is None:
            body = self._error_body(request, 404, f"Model {request.match_info['model_id']} not found")
            return await self._json(request, rec, 404, body, fault)
        payload = {"object": "model", "data": self._shown(request, entry)}
        return await self._cached(request, rec, payload, fault)

    @staticmethod
    def _shown(request: web.Request, entry: dict[str, Any]) -> dict[str, Any]:
        if "pricing" not in request.query.getall("include", []):
            entry = {k: v for k, v in entry.items() if k != "pricing"}
        return entry

    async def _cached(
        self, request: web.Request, rec: RecordedRequest, payload: Any, fault: Any
    ) -> web.StreamResponse:
        """Answer ``payload`` with its ETag, or 304 with no body when ``If-None-Match`` names it."""
        tag = pricing.etag(payload)
        request[HEADERS_KEY] = {"ETag": tag}
        sent = request.headers.get("If-None-Match", "")
        names = {part.strip().removeprefix("W/") for part in sent.split(",")}
        if tag in names or "*" in names:
            rec.status = 304
            return web.Response(status=304)
        return await self._json(request, rec, 200, payload, fault)

    async def _account_read(
        self, request: web.Request, name: str, *, auth: bool = True
    ) -> web.StreamResponse | tuple[RecordedRequest, Any]:
        """The common start of the account routes: off switch, record, fault, key (unless ``auth``
        is False: the model catalogue is public).

        :return: an answer that ends the request, or its record and the fault still to apply.
        """
        early = await self._turned_off(request, name)
        if early is not None:
            return early
        if auth:
            rec, fault, early = await self._start_keyed(request, None, api=False)
        else:
            rec, fault, early = await self._pre_handle(request, None, None, api=False)
        return early if early is not None else (rec, fault)

    async def _handle_usage(self, request: web.Request) -> web.StreamResponse:
        started = await self._account_read(request, "usage")
        if isinstance(started, web.StreamResponse):
            return started
        rec, fault = started
        now = time.time()
        try:
            start, end = parse_window(request.query, now)
        except ValueError as exc:
            return await self._json(request, rec, 400, self._error_body(request, 400, str(exc)), fault)
        delay = self._account.usage_delay
        with self._lock:
            moment = time.monotonic()
            charged = [
                g.usd
                for g in self._generations.values()
                if g.billed_now(moment) and start <= g.finished_wall <= end and g.finished_wall + delay <= now
            ]
        payload = {
            "api_key_prefix": None,
            "start": _iso(start),
            "end": _iso(end),
            "spend": round(sum(charged), 6),
            "currency": "USD",
            "requests": len(charged),
        }
        return await self._json(request, rec, 200, payload, fault)

    async def _handle_logs(self, request: web.Request) -> web.StreamResponse:
        started = await self._account_read(request, "logs")
        if isinstance(started, web.StreamResponse):
            return started
        rec, fault = started
        settings = self._account
        now = time.time()
        with self._lock:
            hits = self._logs_hits
            while hits and hits[0] <= now - settings.logs_rate_window:
                hits.popleft()
            limited = len(hits) >= settings.logs_rate_limit
            wait = math.ceil(hits[0] + settings.logs_rate_window - now) if limited else 0
            if not limited:
                hits.append(now)
        if limited:
            request[HEADERS_KEY] = {"Retry-After": str(max(1, wait))}
            body = self._error_body(request, 429, "Too Many Requests")
            return await self._json(request, rec, 429, body, fault)
        try:
            start, end = parse_window(request.query, now)
            statuses = request.query.getall("status", [])
            for status in statuses:
                if status not in LOG_STATUSES:
                    raise ValueError(f"status: must be one of {', '.join(LOG_STATUSES)}, got {status!r}")
            limit = _int_param(request.query, "limit", 50, 1, 100)
            offset = _int_param(request.query, "offset", 0, 0, None)
        except ValueError as exc:
            return await self._json(request, rec, 400, self._error_body(request, 400, str(exc)), fault)
        models = {pricing.canonical(m) for m in request.query.getall("model", [])}
        with self._lock:
            moment = time.monotonic()
            rows = [
                self._row(row, moment)
                for row in reversed(self._log_rows)
                if start <= row.created <= end
                and row.created + settings.logs_delay <= now
                and (not models or pricing.canonical(row.model) in models)
            ]
        rows = [row for row in rows if not statuses or row["status"] in statuses]
        page = rows[offset : offset + limit]
        more = offset + len(page) < len(rows)
        pagination = {"limit": limit, "offset": offset, "total": len(rows), "has_more": more}
        return await self._json(request, rec, 200, {"data": page, "pagination": pagination}, fault)

    def _row(self, row: LogRow, now: float) -> dict[str, Any]:
        """A log row as ``/v2/logs`` answers it. Lock held."""
        gen = self._generations.get(row.generation_id) if row.generation_id is not None else None
        succeeded = gen is not None and gen.outcome == "completed"
        usd = gen.usd if succeeded and gen is not None else 0.0
        tokens = TOKENS_PER_SECOND * gen.duration if succeeded and gen is not None else 0
        shown_id = row.client_request_id if "client_request_id" not in self._account.disabled else None
        return {
            "created": _iso(row.created),
            "status": "succeeded" if succeeded else "failed",
            "origin": "api",
            "model": row.model,
            "cost": {"usd": usd, "credits": pricing.credits(usd)},
            "tokens": {"input": 0, "output": tokens, "total": tokens},
            "request_id": row.request_id,
            "inference_id": row.generation_id,
            "client_request_id": shown_id,
        }

    # ------------------------------------------------------------------ control routes

    async def _ctl_account_get(self, request: web.Request) -> web.Response:
        return web.json_response(self.account_settings.as_dict())

    async def _ctl_account(self, request: web.Request) -> web.Response:
        try:
            params = await request.json()
            if not isinstance(params, dict):
                raise ValueError("expected a JSON object of account settings")
            settings = self.configure_account(**params)
        except (ValueError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, "settings": settings.as_dict()})
