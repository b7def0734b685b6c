"""What the gallery's generations cost, per DAG and UTC day: the USD the service billed, summed.

Only what the service reported counts (``usd_spent``, from its cost headers or ``meta.usage``); a
reused video cost nothing; a generation that reported no USD figure is counted apart, never priced
by guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def billed_usd(result: dict[str, Any]) -> float | None:
    """The USD one task result reports as billed: 0 for a reused video, None when it reports none.

    :param result: a Kling task's XCom dict, or a batch results row.
    """
    if result.get("reused") is True or result.get("status") == "reused":
        return 0.0
    for value in (result.get("usd_spent"), (result.get("usage") or {}).get("usd_spent")):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def spend_by_dag_and_day(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spend per DAG and UTC day over the gallery's entries, newest day first.

    :param entries: ``{"row": XComModel, "result": dict}`` as the gallery lists them (already
        filtered to the DAGs the viewer may read).
    :return: one dict per (DAG, day): ``dag_id``, ``day``, ``usd``, ``generations`` and ``unpriced``
        (generations that reported no USD figure).
    """
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        row, result = entry["row"], entry["result"]
        day = row.timestamp.date().isoformat() if getattr(row, "timestamp", None) else "unknown"
        total = totals.setdefault(
            (row.dag_id, day), {"dag_id": row.dag_id, "day": day, "usd": 0.0, "generations": 0, "unpriced": 0}
        )
        total["generations"] += 1
        usd = billed_usd(result)
        if usd is None:
            total["unpriced"] += 1
        else:
            total["usd"] = round(total["usd"] + usd, 6)
    return sorted(totals.values(), key=lambda t: (t["day"], t["dag_id"]), reverse=True)
