"""Finding a POST whose answer was lost: its client request id looked up in ``GET /v2/logs``.

A paid POST whose answer never arrived may or may not have created a generation. The service logs
one row per request with the ``X-Client-Request-Id`` it carried and the generation id it created
(``inference_id``), so the provider looks the id up instead of guessing: found, it reconnects to that
generation and pays nothing; not found, it looks again until the connection's bound (the extra
``reconcile_window_seconds``, default ten minutes after the POST: the logs come from an analytics
pipeline and lag) and only then sends again. A service that does not offer ``/v2/logs`` (404/405)
leaves the at-most-once behaviour as it always was, and the log says so.

Each look reads the window from just before the POST to now, filtered by model, 100 rows a page, and
keeps under the route's documented rate (200 requests a minute); a 429 is waited out as its
``Retry-After`` asks (the hook's retry policy for a GET).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_provider_kling.exceptions import KlingAPIError, KlingError

LOGS_PATH = "/v2/logs"
#: Connection extras: how long after a lost POST to keep looking, and how often.
WINDOW_EXTRA = "reconcile_window_seconds"
POLL_EXTRA = "reconcile_poll_seconds"
DEFAULT_WINDOW = 600.0
DEFAULT_POLL = 10.0
#: Most sends of one request whose answers keep getting lost (each after a full look).
MAX_SENDS = 3
#: A look's window starts this long before the POST (clocks of the worker and the service differ).
SKEW = 120.0
PAGE = 100
#: ``/v2/logs``' documented rate limit, kept by every lookup of this process together.
RATE_LIMIT = 200
RATE_WINDOW = 60.0

_hits: collections.deque[float] = collections.deque()
_hits_lock = threading.Lock()


class LogsNotOffered(KlingError):
    """The service answers ``/v2/logs`` with 404 or 405: lost answers cannot be looked up."""


@dataclass(frozen=True)
class ReconcileSettings:
    """How long and how often to look for a lost POST (from the connection's extras).

    :param window: seconds after the POST to keep looking before sending again.
    :param poll: seconds between looks.
    """

    window: float = DEFAULT_WINDOW
    poll: float = DEFAULT_POLL

    @classmethod
    def from_connection(cls, conn: Any) -> ReconcileSettings:
        """Read ``reconcile_window_seconds`` / ``reconcile_poll_seconds`` (bad values: a clear error)."""
        from airflow_provider_kling.exceptions import KlingValidationError

        try:
            extra = conn.extra_dejson or {}
        except Exception:
            extra = {}
        values = {}
        extras = ((WINDOW_EXTRA, "window", DEFAULT_WINDOW), (POLL_EXTRA, "poll", DEFAULT_POLL))
        for name, field, default in extras:
            raw = extra.get(name) if isinstance(extra, dict) else None
            # The form stores an empty field as null (Airflow 3) and a number as text (2.11 to 3.1).
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                raw = default
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = -1.0
            if isinstance(raw, bool) or not (value > 0 and math.isfinite(value)):
                conn_id = getattr(conn, "conn_id", None) or "?"
                problem = f"must be a number of seconds > 0 (empty: {default:g}), got {raw!r}"
                raise KlingValidationError([(f"connection {conn_id!r} extra {name}", problem)])
            values[field] = value
        return cls(**values)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pace() -> None:
    """Wait, when needed, so this process sends at most RATE_LIMIT looks per RATE_WINDOW seconds."""
    while True:
        with _hits_lock:
            now = time.monotonic()
            while _hits and _hits[0] <= now - RATE_WINDOW:
                _hits.popleft()
            if len(_hits) < RATE_LIMIT:
                _hits.append(now)
                return
            wait = _hits[0] + RATE_WINDOW - now
        time.sleep(max(0.05, wait))


def look(hook: Any, client_ids: set[str], models: set[str], since: float) -> dict[str, str]:
    """One look through ``/v2/logs``: which of ``client_ids`` the service logged, and their generations.

    :param hook: the :class:`~airflow_provider_kling.hooks.kling.KlingHook` (its key, retries, limits).
    :param client_ids: the client request ids looked for.
    :param models: the models they were sent for (the route's filter).
    :param since: when the earliest of them was sent (UNIX epoch).
    :return: client request id -> generation id (``inference_id``), for those found.
    :raises LogsNotOffered: the route answers 404 or 405.
    """
    wanted = set(client_ids)
    found: dict[str, str] = {}
    params: dict[str, Any] = {
        "start": _iso(since - SKEW),
        "end": _iso(time.time() + SKEW),  # fixed for the look: new rows do not shift its pages
        "limit": str(PAGE),
    }
    if models:
        params["model"] = sorted(models)
    offset = 0
    while wanted - found.keys():
        _pace()
        try:
            body = hook._call("GET", path=LOGS_PATH, params={**params, "offset": str(offset)})
        except KlingAPIError as exc:
            if exc.status_code in (404, 405):
                raise LogsNotOffered(f"{LOGS_PATH} answered {exc.status_code}") from None
            raise
        rows = body.get("data") if isinstance(body.get("data"), list) else []
        for row in rows:
            if not isinstance(row, dict):
                continue
            cid, gid = row.get("client_request_id"), row.get("inference_id")
            if cid in wanted and gid and row.get("status") != "failed":
                found[str(cid)] = str(gid)
        pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else {}
        if not rows or not pagination.get("has_more"):
            break
        offset += len(rows)
    return found


def wait_for_logged(
    hook: Any,
    client_id: str,
    model: str,
    sent_at: float,
    settings: ReconcileSettings,
    log: Any,
    since: float | None = None,
) -> str | None:
    """Look for one lost POST until it is found or the bound passes.

    :param hook: the hook that sent it.
    :param client_id: the client request id it carried.
    :param model: the model it asked for.
    :param sent_at: when it was sent (UNIX epoch); the bound counts from here.
    :param settings: the bound and the pace of looks.
    :param log: where each look is told.
    :param since: when the first POST of this request was sent (default ``sent_at``): the window's start.
    :return: the generation it created, or None when the bound passed without finding it.
    :raises LogsNotOffered: the service does not offer ``/v2/logs``.
    """
    bound = sent_at + settings.window
    looks = 0
    while True:
        looks += 1
        found = look(hook, {client_id}, {model}, since if since is not None else sent_at).get(client_id)
        if found is not None:
            return found
        left = bound - time.time()
        if left <= 0:
            log.warning(
                "Client request id %s is not in %s after %s look(s) over %.0f s: the lost POST created "
                "nothing the service logged",
                client_id,
                LOGS_PATH,
                looks,
                settings.window,
            )
            return None
        if looks == 1:
            log.info(
                "Client request id %s is not in %s yet (its rows lag); looking every %.0f s until %s",
                client_id,
                LOGS_PATH,
                settings.poll,
                time.strftime("%H:%M:%S UTC", time.gmtime(bound)),
            )
        time.sleep(min(settings.poll, left))


def find_lost_post(
    hook: Any, exc: KlingError, client_id: str, model: str, since: float, sent_at: float
) -> Any:
    """The generation a POST with a lost answer created, per ``/v2/logs``; None: send it again.

    :param hook: the hook that sent it.
    :param exc: the lost answer's error (raised again when the route is not offered).
    :param client_id: the client request id the POST carried.
    :param model: the model it asked for.
    :param since: when the first POST of this request was sent (UNIX epoch): the window's start.
    :param sent_at: when this POST was sent: the bound counts from here.
    :return: the :class:`~airflow_provider_kling.schemas.generation.Generation`, or None.
    :raises KlingError: ``exc`` when the service offers no ``/v2/logs`` (at most once, as before).
    """
    hook.log.warning(
        "The answer to the Kling POST was lost (%s); looking its client request id %s up in %s",
        exc,
        client_id,
        LOGS_PATH,
    )
    settings = hook.endpoint.reconcile
    try:
        found = wait_for_logged(hook, client_id, model, sent_at, settings, hook.log, since)
    except LogsNotOffered as missing:
        hook.log.warning(
            "The service does not offer %s (%s): the lost POST cannot be looked up and is not sent "
            "again (at most once)",
            LOGS_PATH,
            missing,
        )
        raise exc from None
    if found is None:
        return None
    generation = hook.get_generation(found)
    hook.log.info(
        "Kling generation %s was created by the POST whose answer was lost (client request id %s): "
        "reconnected to it, nothing paid again",
        generation.id,
        client_id,
    )
    return generation


__all__ = [
    "DEFAULT_POLL",
    "DEFAULT_WINDOW",
    "LOGS_PATH",
    "MAX_SENDS",
    "POLL_EXTRA",
    "WINDOW_EXTRA",
    "LogsNotOffered",
    "ReconcileSettings",
    "find_lost_post",
    "look",
    "wait_for_logged",
]
