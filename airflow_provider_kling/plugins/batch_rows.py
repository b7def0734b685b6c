"""The gallery's batch rows: a batch task's XCom summary points at its results manifest, whose rows
the gallery lists beside single generations (Airflow 3.1+ only, like the rest of the gallery).

The summary and the manifest are written by tasks, so neither is trusted as a file name: the manifest
is read only under ``[kling] gallery_roots`` and only when its sidecar names the summary's DAG
(:func:`~airflow_provider_kling.plugins.streaming.read_results`); a row's video is streamed only
under the roots, with a sidecar naming the row's generation and the same DAG. Without roots, batch
rows are not listed (the page says how to enable streaming).
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_kling.plugins.streaming import Roots, StreamRefused, read_results

#: The keys of a batch summary (what KlingBatchVideoOperator returns as XCom).
SUMMARY_KEYS = frozenset({"results", "output_prefix", "rows", "completed", "failed"})
#: Most bytes of one results manifest the gallery reads per request.
MAX_RESULTS_BYTES = 8 * 1024 * 1024


def batch_summary(value: Any) -> dict[str, Any] | None:
    """``value`` when it is a batch task's summary (a dict naming its results manifest), else None.

    :param value: a deserialized ``return_value`` XCom.
    """
    if isinstance(value, dict) and SUMMARY_KEYS <= value.keys() and isinstance(value["results"], str):
        return value
    return None


def batch_rows(summary: dict[str, Any], dag_id: str, roots: Roots, limit: int) -> list[dict[str, Any]]:
    """The rows of the summary's results manifest, as Kling results (``batch_key`` names the row).

    Nothing when the manifest may not be read (outside the roots, no sidecar naming ``dag_id``,
    unreadable); lines that are not a row are skipped.

    :param summary: the batch's XCom summary.
    :param dag_id: the DAG of that XCom.
    :param roots: the configured roots.
    :param limit: most rows returned.
    """
    if not roots.enabled:
        return []
    try:
        body = read_results(summary["results"], dag_id, roots, MAX_RESULTS_BYTES)
    except StreamRefused:
        return []
    rows: list[dict[str, Any]] = []
    for line in body.splitlines():
        if len(rows) >= limit:
            break
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by the read limit, or not JSON
            continue
        if not isinstance(row, dict) or not isinstance(row.get("key"), str) or not row["key"]:
            continue
        rows.append(
            {
                "generation_id": row.get("generation_id"),
                "status": row.get("status"),
                "raw_status": row.get("status"),
                "model": row.get("model"),
                "prompt": row.get("prompt") if isinstance(row.get("prompt"), str) else row["key"],
                "duration": row.get("duration"),
                "video_path": row.get("video_path") or row.get("video"),
                "video_url": row.get("video_url"),
                "file_size": row.get("file_size"),
                "usage": row.get("usage") if isinstance(row.get("usage"), dict) else {},
                "error": row.get("error"),
                "batch_key": row["key"],
            }
        )
    return rows


def batch_row(summary: dict[str, Any], dag_id: str, roots: Roots, key: str) -> dict[str, Any] | None:
    """The row ``key`` of the summary's results manifest, or None.

    :param summary: the batch's XCom summary.
    :param dag_id: the DAG of that XCom.
    :param roots: the configured roots.
    :param key: the row key.
    """
    for row in batch_rows(summary, dag_id, roots, limit=1 << 30):
        if row["batch_key"] == key:
            return row
    return None
