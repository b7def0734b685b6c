"""The batch's ``unknown`` rows resolved through ``/v2/logs`` before the batch ends.

A row is ``unknown`` when its POST may have created a generation whose id never came back: its answer
was lost, or the worker was killed while it was in flight. Every POST carries the row's client request
id, recorded (with the time it was sent) before the POST leaves, so the rows can be looked up together,
one paged read of ``/v2/logs`` per look: a row found is in flight at its generation (nothing paid
again); a row not found by the connection's bound (``reconcile_window_seconds`` after its POST) is sent
again. Where the service offers no ``/v2/logs``, the rows stay ``unknown`` as they always did.
"""

from __future__ import annotations

import time
from typing import Any

from airflow_provider_kling.exceptions import KlingError
from airflow_provider_kling.hooks._reconcile import LOGS_PATH, LogsNotOffered, ReconcileSettings, look


class UnknownRows:
    """Looks a batch's ``unknown`` rows up, at most once per ``reconcile_poll_seconds``.

    :param hook: the batch's :class:`~airflow_provider_kling.hooks.kling.KlingHook`.
    :param log: the task's logger.
    """

    def __init__(self, hook: Any, log: Any) -> None:
        self.hook = hook
        self.log = log
        self.settings: ReconcileSettings = hook.endpoint.reconcile
        self.offered = True
        self._next_look = 0.0

    def resolve(
        self, unknown: dict[str, dict[str, Any]], models: dict[str, str]
    ) -> tuple[dict[str, str], list[str], int]:
        """One look for the rows given.

        :param unknown: row key -> its state record (``crid``: its client request id, ``sent``: when).
        :param models: row key -> the model it asked for.
        :return: rows found (key -> generation id), rows to send again (past the bound), and how many
            are still being looked for.
        """
        traceable = {
            key: record
            for key, record in unknown.items()
            if record.get("crid") and isinstance(record.get("sent"), (int, float))
        }
        if not traceable or not self.offered:
            return {}, [], 0
        if time.time() < self._next_look:
            return {}, [], len(traceable)
        try:
            hits = look(
                self.hook,
                {str(record["crid"]) for record in traceable.values()},
                {models[key] for key in traceable},
                min(float(record["sent"]) for record in traceable.values()),
            )
        except LogsNotOffered as exc:
            self.offered = False
            self.log.warning(
                "The service does not offer %s (%s): %s row(s) whose POST answer was lost stay unknown "
                "and are not sent again (at most once)",
                LOGS_PATH,
                exc,
                len(traceable),
            )
            return {}, [], 0
        except KlingError as exc:
            self.log.warning("Could not read %s (%s); looking again", LOGS_PATH, exc)
            hits = {}
        now = time.time()
        self._next_look = now + self.settings.poll
        found = {key: hits[str(r["crid"])] for key, r in traceable.items() if str(r["crid"]) in hits}
        resend = [
            key
            for key, record in traceable.items()
            if key not in found and now >= float(record["sent"]) + self.settings.window
        ]
        looking = len(traceable) - len(found) - len(resend)
        self.log.info(
            "%s: %s row(s) whose POST answer was lost found at their generation (nothing paid again), %s "
            "not logged within %.0f s of their POST and sent again, %s still looked for",
            LOGS_PATH,
            len(found),
            len(resend),
            self.settings.window,
            looking,
        )
        return found, resend, looking

    def settle(self, state: Any, rows: list[tuple[Any, dict[str, Any]]], api: str) -> tuple[int, float]:
        """Look the ``unknown`` ones of ``rows`` up and write what was learnt into the batch's state.

        :param state: the batch's :class:`~airflow_provider_kling.batch.state.BatchState`.
        :param rows: (manifest row, its state record) for the rows that have a record.
        :param api: the endpoint the rows were sent to.
        :return: rows still being looked for, and the seconds before the next look (0: none left).
        """
        from airflow_provider_kling.batch.state import SUBMITTED, UNKNOWN

        unknown = {row.key: record for row, record in rows if record.get("st") == UNKNOWN}
        if not unknown:
            return 0, 0.0
        models = {row.key: row.model for row, _record in rows if row.key in unknown}
        found, resend, looking = self.resolve(unknown, models)
        for key, generation_id in found.items():
            state.update(key, st=SUBMITTED, id=generation_id, api=api, usage={}, error=None)
        for key in resend:
            state.forget(key)
        return looking, self.settings.poll if looking else 0.0


__all__ = ["UnknownRows"]
