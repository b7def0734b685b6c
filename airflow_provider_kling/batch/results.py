"""A batch's results: one results-manifest row per manifest row, and the failed rows named for a
failed batch's error. Rows hold no signed URL: errors are redacted here, and the service URL was
stored without its signature.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_kling.batch.manifest import Row
from airflow_provider_kling.batch.state import COMPLETED, DONE, FAILED, REUSED, SENDING, SUBMITTED, UNKNOWN
from airflow_provider_kling.exceptions import redact_urls

#: Failed rows a failed batch's error names (the rest are counted, and all are in the results).
FAILURES_SHOWN = 10
#: Characters of one row's error shown in a failed batch's message.
FAILURE_TEXT = 300


def results_row(row: Row, record: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The results-manifest line of one row, and the status it is counted under.

    :param row: the manifest row.
    :param record: the row's state record (empty when it was never sent).
    """
    status = record.get("st")
    if status in (COMPLETED, SUBMITTED, SENDING, None):
        # Its download kept failing, it was still running, or it was never sent before the batch ended.
        status = FAILED
    stored = status in (DONE, REUSED)
    error = None
    if status in (FAILED, UNKNOWN):
        unfinished = _UNFINISHED.get(str(record.get("st")), "never sent before the batch ended")
        error = redact_urls(str(record.get("error") or unfinished))
    line = {
        "key": row.key,
        "generation_id": record.get("id"),
        "status": {DONE: "completed"}.get(status, status),
        "model": row.model,
        "prompt": _text(row.request.fields.get("prompt")),
        "duration": row.request.fields.get("duration"),
        "video_path": record.get("video") if stored else None,
        "video": record.get("video") if stored else None,
        "video_url": record.get("url") if stored else None,
        "file_size": record.get("size") if stored else None,
        "usage": record.get("usage") or {},
        "error": error,
        "client_request_id": record.get("crid"),
    }
    return line, status


#: Why a row that ended without an error of its own failed, by the state it was left in.
_UNFINISHED = {
    SUBMITTED: "still in progress at the service when the batch ended",
    COMPLETED: "finished at the service but its video could not be stored",
}


def describe_failures(failures: list[tuple[str, str]], limit: int = FAILURES_SHOWN) -> str:
    """The failed rows, for a failed batch's error: up to ``limit`` ``key: message`` lines, then how many
    more (every one is in the results manifest). Messages are shortened and hold no signed URL.

    :param failures: (row key, error) of every failed row, in manifest order.
    :param limit: how many rows to name.
    """
    shown = []
    for key, error in failures[:limit]:
        text = " ".join(redact_urls(error).split())
        if len(text) > FAILURE_TEXT:
            text = text[: FAILURE_TEXT - 3] + "..."
        shown.append(f"  {key}: {text}")
    more = len(failures) - len(shown)
    if more > 0:
        shown.append(f"  and {more} more")
    return "\n".join(shown)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
