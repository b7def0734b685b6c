"""Caps that hold before the money moves: ``max_usd`` of a task and the connection's ``daily_usd_cap``.

The daily cap is checked before each POST against the key's spend for the current UTC day (``GET
/v2/usage``, read at most every :data:`SPEND_TTL` seconds) plus what this process has in flight: each
POST reserves its estimate first, and the reservation is released when this process sees the
generation end (its charge then shows in ``/v2/usage``) or when the POST surely created nothing.
When a cap is set and the price or the spend cannot be read, the request fails closed.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingBudgetExceeded,
    KlingBudgetUnknown,
    KlingError,
    KlingForbiddenError,
    KlingOutOfCreditsError,
    KlingValidationError,
)

if TYPE_CHECKING:
    from airflow_provider_kling.cost.estimate import Estimate

USAGE_PATH = "/v2/usage"
#: Seconds a spend read from /v2/usage is used before it is read again (new POSTs are counted apart).
SPEND_TTL = 30.0
#: Words of a 403 that refuses for money rather than for access to a model.
MONEY_WORDS = ("credit", "balance", "top up", "spending limit", "limit", "payment")

_LOCK = threading.Lock()
# base URL -> token -> (UTC day, USD) of the POSTs this process reserved and has not seen end.
_IN_FLIGHT: dict[str, dict[str, tuple[str, float]]] = {}
# base URL -> (UTC day, monotonic time read, USD spent).
_SPEND: dict[str, tuple[str, float, float]] = {}
_TOKENS = itertools.count()


def utc_day(now: float | None = None) -> str:
    """The current UTC day as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).strftime("%Y-%m-%d")


def how_to_price(model: str, conn_id: str, why: str) -> str:
    """The fail-closed message when a cap is set but ``model`` has no price."""
    return (
        f"a cost cap is set but the price of {model!r} is unknown ({why}), so nothing is sent. Give it in "
        f'connection {conn_id!r}\'s extra, e.g. {{"prices": {{"{model}": 0.098}}}} (USD per second of '
        "video, or a pricing object as GET /v1/models?include=pricing answers it), or remove the cap"
    )


def check_max_usd(max_usd: float | None, estimate: Estimate, spent: float, conn_id: str, what: str) -> None:
    """Raise before a POST whose estimate would cross ``max_usd``; fail closed on an unknown price.

    :param max_usd: the task's cap in USD (None: no cap).
    :param estimate: the request's estimate.
    :param spent: what the task already spent or has in flight, in USD.
    :param conn_id: the connection (named in the fail-closed message).
    :param what: what is stopped, for the message.
    """
    if max_usd is None:
        return
    if estimate.usd is None:
        raise KlingBudgetUnknown(
            f"max_usd ${max_usd:.4f}: " + how_to_price(estimate.model, conn_id, estimate.reason or "?")
        )
    if spent + estimate.usd > max_usd + 1e-9:
        raise KlingBudgetExceeded("max_usd", max_usd, estimate.usd, spent, what)


def max_usd_cap(value: Any) -> float | None:
    """A task's ``max_usd`` argument as USD, checked before anything is sent.

    :param value: what the task was given (None: no cap).
    :raises KlingValidationError: not a number of USD, 0 or more.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise KlingValidationError([("max_usd", f"must be a number of USD, 0 or more, got {value!r}")])
    return float(value)


def request_plan(estimate: Estimate, endpoint: str, max_usd: float | None) -> dict[str, Any]:
    """``dry_run``'s XCom for one request: what it would cost and whether it would cross ``max_usd``.

    :param estimate: the validated request's estimate.
    :param endpoint: the endpoint it would be sent to.
    :param max_usd: the task's cap, if any.
    """
    plan: dict[str, Any] = {
        "dry_run": True,
        "model": estimate.model,
        "endpoint": endpoint,
        "duration": estimate.seconds,
        "estimated_usd": estimate.usd,
        "price_source": estimate.source,
        "unknown_because": estimate.reason,
        "max_usd": max_usd,
    }
    if max_usd is not None and estimate.usd is not None and estimate.usd > max_usd:
        plan["over_max_usd"] = True
    return plan


@dataclass
class Reservation:
    """An estimate held against the daily cap while its POST is in flight."""

    base_url: str
    token: str

    def bind(self, generation_id: str) -> None:
        """Keep the hold under the generation's id, released when this process sees it end."""
        with _LOCK:
            held = _IN_FLIGHT.get(self.base_url, {})
            if self.token in held:
                held[f"gen:{generation_id}"] = held.pop(self.token)
                self.token = f"gen:{generation_id}"

    def release(self) -> None:
        """Drop the hold (the POST surely created nothing)."""
        with _LOCK:
            _IN_FLIGHT.get(self.base_url, {}).pop(self.token, None)


def generation_ended(base_url: str, generation_id: str) -> None:
    """This process saw ``generation_id`` end: its charge is now the service's to report."""
    with _LOCK:
        _IN_FLIGHT.get(base_url, {}).pop(f"gen:{generation_id}", None)


def in_flight(base_url: str, day: str | None = None) -> float:
    """USD this process holds in flight against ``base_url``'s key today."""
    day = day or utc_day()
    with _LOCK:
        return round(sum(usd for d, usd in _IN_FLIGHT.get(base_url, {}).values() if d == day), 6)


def read_spend(hook: Any, *, fresh: bool = False) -> float:
    """The key's spend for the current UTC day from ``/v2/usage`` (kept :data:`SPEND_TTL` seconds).

    :param hook: the :class:`~airflow_provider_kling.hooks.kling.KlingHook`.
    :param fresh: read it again even when a recent figure is kept.
    :raises KlingBudgetUnknown: the route is not offered, or the spend cannot be read now.
    """
    from airflow_provider_kling.hooks import _transport

    endpoint = hook.endpoint
    day = utc_day()
    with _LOCK:
        kept = _SPEND.get(endpoint.base_url)
    if kept is not None and not fresh and kept[0] == day and time.monotonic() - kept[1] < SPEND_TTL:
        return kept[2]
    # The end rounded up to the next whole second: a charge made within the current second counts.
    end = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    params = {"start": f"{day}T00:00:00Z", "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")}
    where = f"connection {endpoint.conn_id!r} has 'daily_usd_cap' {endpoint.daily_usd_cap}"
    try:
        attempt = _transport.Attempt(endpoint, "GET", USAGE_PATH, hook.call_timeout, hook.timeout)
        body = _transport.send(hook.session, attempt, params=params)
    except KlingAPIError as exc:
        offered = "" if exc.status_code not in (404, 405) else " (the service does not offer this route)"
        raise KlingBudgetUnknown(
            f"{where}, but the key's spend today cannot be read: GET {USAGE_PATH} answered "
            f"{exc.status_code}{offered}. Nothing is sent; remove 'daily_usd_cap' from the connection "
            "to run without it, or use max_usd on the task"
        ) from None
    except KlingError as exc:
        raise KlingBudgetUnknown(
            f"{where}, but the key's spend today cannot be read ({exc}); nothing is sent"
        ) from None
    spend = body.get("spend")
    if not isinstance(spend, (int, float)) or isinstance(spend, bool):
        raise KlingBudgetUnknown(f"{where}, but GET {USAGE_PATH} answered no 'spend' figure; nothing is sent")
    with _LOCK:
        _SPEND[endpoint.base_url] = (day, time.monotonic(), float(spend))
    return float(spend)


def reserve_daily(hook: Any, estimate: Estimate) -> Reservation | None:
    """Check the connection's ``daily_usd_cap`` before a POST and hold the estimate while it runs.

    :param hook: the :class:`~airflow_provider_kling.hooks.kling.KlingHook` about to POST.
    :param estimate: the request's estimate.
    :return: the hold, or None when the connection sets no daily cap.
    :raises KlingBudgetExceeded: the spend today, what is in flight and this estimate cross the cap.
    :raises KlingBudgetUnknown: the price or the spend cannot be read.
    """
    endpoint = hook.endpoint
    cap = endpoint.daily_usd_cap
    if cap is None:
        return None
    name = f"connection {endpoint.conn_id!r} daily_usd_cap"
    if estimate.usd is None:
        raise KlingBudgetUnknown(
            f"{name} ${cap:.4f}: " + how_to_price(estimate.model, endpoint.conn_id, estimate.reason or "?")
        )
    spent = read_spend(hook)
    day = utc_day()
    with _LOCK:
        held = _IN_FLIGHT.setdefault(endpoint.base_url, {})
        flying = sum(usd for d, usd in held.values() if d == day)
        committed = round(spent + flying, 6)
        if committed + estimate.usd > cap + 1e-9:
            raise KlingBudgetExceeded(
                f"{name} (spent today ${spent:.4f} + in flight ${flying:.4f})",
                cap,
                estimate.usd,
                committed,
            )
        token = f"hold:{next(_TOKENS)}"
        held[token] = (day, estimate.usd)
    return Reservation(endpoint.base_url, token)


def money_refusal(exc: KlingForbiddenError, conn_id: str, daily_cap: float | None) -> KlingError:
    """A 403 that refuses for money as :class:`KlingOutOfCreditsError` (else the 403 as it was).

    :param exc: the 403.
    :param conn_id: the connection whose key was refused.
    :param daily_cap: the connection's ``daily_usd_cap``, named beside the key's own limit.
    """
    text = exc.message.lower()
    if not any(word in text for word in MONEY_WORDS):
        return exc
    limit = "the key's balance or its spending limit on the service"
    if daily_cap is not None:
        limit += f"; this connection's own daily_usd_cap is ${daily_cap:.4f}"
    return KlingOutOfCreditsError(conn_id, limit, exc)


#: A batch row not sent because its estimate would cross a cap (reported in the results manifest).
SKIPPED_BUDGET = "skipped_budget"
#: Batch row states whose estimate counts against the batch's ``max_usd``: sent, paid, or maybe paid.
COMMITTED_STATES = ("sending", "submitted", "completed", "done", "unknown")


class BatchBudget:
    """A batch's estimates (logged before its first POST) and its ``max_usd`` over the whole batch.

    Each pass counts the estimates of the rows already sent (in flight, paid, or maybe paid), and each
    row takes its estimate before its POST: a row that would cross the cap is not sent.

    :param hook: the batch's hook (prices come from it).
    :param rows: the validated rows (objects with ``key``, ``model`` and ``request``).
    :param max_usd: the cap over the whole batch, in USD (None: no cap).
    :param log: the task's logger.
    :param announce: log the estimate (the try's first pass).
    :raises KlingBudgetUnknown: a cap is set and some row's price is unknown (nothing is sent).
    """

    def __init__(self, hook: Any, rows: list[Any], max_usd: float | None, log: Any, announce: bool) -> None:
        from airflow_provider_kling.cost.estimate import by_model, total
        from airflow_provider_kling.exceptions import KlingValidationError

        if max_usd is not None and (
            isinstance(max_usd, bool) or not isinstance(max_usd, (int, float)) or max_usd < 0
        ):
            raise KlingValidationError([("max_usd", f"must be a number of USD, 0 or more, got {max_usd!r}")])
        self.max_usd = None if max_usd is None else float(max_usd)
        self.conn_id = hook.kling_conn_id
        self.estimates: dict[str, Estimate] = {row.key: hook.estimate(row.request) for row in rows}
        self.total, unknown = total(list(self.estimates.values()))
        self._lock = threading.Lock()
        self._used = 0.0
        if announce:
            models = "; ".join(
                f"{model}: {n} row(s) ${usd:.4f}" + (f" + {unknown_n} unknown" if unknown_n else "")
                for model, (n, usd, unknown_n) in sorted(by_model(list(self.estimates.values())).items())
            )
            log.info(
                "Kling batch: estimated $%.4f for %s row(s)%s before the first POST (%s)%s",
                self.total,
                len(self.estimates),
                f", {unknown} of them with no known price" if unknown else "",
                models,
                f"; max_usd ${self.max_usd:.4f}" if self.max_usd is not None else "",
            )
        if self.max_usd is not None and unknown:
            first = next(e for e in self.estimates.values() if e.usd is None)
            keys = [k for k, e in self.estimates.items() if e.usd is None]
            raise KlingBudgetUnknown(
                f"max_usd ${self.max_usd:.4f}: {len(keys)} row(s) have no known price (e.g. "
                f"{', '.join(keys[:5])}): " + how_to_price(first.model, self.conn_id, first.reason or "?")
            )

    def start_pass(self, records: dict[str, dict[str, Any] | None]) -> None:
        """Count the estimates of the rows already sent (their records in the batch state).

        :param records: row key -> its current state record (None when not sent).
        """
        with self._lock:
            self._used = round(
                sum(
                    self.estimates[key].usd or 0.0
                    for key, record in records.items()
                    if record is not None and record.get("st") in COMMITTED_STATES
                ),
                6,
            )

    def take(self, key: str) -> Estimate:
        """Take row ``key``'s estimate before its POST.

        :raises KlingBudgetExceeded: it would cross ``max_usd`` (the row is not sent).
        """
        estimate = self.estimates[key]
        if self.max_usd is None:
            return estimate
        with self._lock:
            check_max_usd(self.max_usd, estimate, self._used, self.conn_id, f"row {key!r}")
            self._used = round(self._used + (estimate.usd or 0.0), 6)
        return estimate

    def failure(self, summary: dict[str, Any]) -> str:
        """The task's failure message when rows were skipped for a cap (names the cap and the figures).

        :param summary: the batch summary (``rows``, ``skipped_budget``, ``skipped_budget_usd``).
        """
        skipped = summary["skipped_budget"]
        cap = f"max_usd ${self.max_usd:.4f}" if self.max_usd is not None else "a cost cap"
        return (
            f"{skipped} of {summary['rows']} rows were not sent because their estimates would cross "
            f"{cap} (or the connection's daily_usd_cap; each row's error in {summary['results']} names "
            f"its cap): ${summary['skipped_budget_usd']:.4f} estimated for them, ${self._used:.4f} spent "
            f"or in flight by the rows sent, ${self.total:.4f} for the whole batch. A clear with a higher "
            "cap sends only the skipped rows"
        )


def forget() -> None:
    """Drop every hold and kept spend of this process (tests, a new day)."""
    with _LOCK:
        _IN_FLIGHT.clear()
        _SPEND.clear()


__all__ = [
    "COMMITTED_STATES",
    "SKIPPED_BUDGET",
    "BatchBudget",
    "Reservation",
    "check_max_usd",
    "forget",
    "generation_ended",
    "how_to_price",
    "in_flight",
    "money_refusal",
    "read_spend",
    "reserve_daily",
]
