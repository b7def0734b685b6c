"""Client request ids: the ``X-Client-Request-Id`` every paid POST carries, tying it to its task.

The service accepts 1-128 characters of ``A-Z a-z 0-9 . _ : -`` and silently drops any other id (the
request still runs and is billed), so an id is built to fit by construction: a readable part (DAG,
task, run, map index, row key, request fingerprint) with every other character replaced and cut to
length, then a hash of the exact, unreplaced parts, so two tasks whose names differ only in the
characters replaced never share an id. The try number is never part of it: a retry of the same
request carries the same id, which is what lets a lost answer be found again in ``/v2/logs``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

#: What the service accepts (1-128 of these characters); anything else is silently dropped.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: The header a paid POST carries its id in.
CLIENT_REQUEST_ID_HEADER = "X-Client-Request-Id"
MAX_LENGTH = 128
_PREFIX = "kl"
_HASH_CHARS = 20  # 80 bits of sha256: no two tasks of one account share an id in practice
_OUTSIDE = re.compile(r"[^A-Za-z0-9._-]+")  # ":" is kept out of the parts: it separates them


def _part(value: Any) -> str:
    return _OUTSIDE.sub("_", str(value)).strip("_") or "_"


def client_request_id(
    *,
    dag_id: str | None,
    task_id: str | None,
    run_id: str | None,
    map_index: int | None = -1,
    row_key: str | None = None,
    fingerprint: str,
) -> str:
    """The client request id of one paid POST: same task, run, row and request, same id.

    :param dag_id: the DAG's id.
    :param task_id: the task's id.
    :param run_id: the DAG run's id.
    :param map_index: the mapped task's index (-1 when not mapped).
    :param row_key: the batch row's key (None for a single generation).
    :param fingerprint: the request's fingerprint (:meth:`KlingRequest.fingerprint`).
    :return: 1-128 characters of ``A-Z a-z 0-9 . _ : -``.
    """
    exact = [dag_id, task_id, run_id, map_index if map_index is not None else -1, row_key, fingerprint]
    digest = hashlib.sha256(json.dumps(exact, separators=(",", ":"), default=str).encode()).hexdigest()
    tail = f":{digest[:_HASH_CHARS]}"
    parts = [dag_id, task_id, run_id, exact[3]] + ([row_key] if row_key is not None else [])
    readable = ":".join([_PREFIX, *(_part(p) for p in parts)])
    built = readable[: MAX_LENGTH - len(tail)] + tail
    assert CLIENT_REQUEST_ID.fullmatch(built), built  # by construction
    return built


def from_context(context: Any, fingerprint: str, row_key: str | None = None) -> str:
    """:func:`client_request_id` for the task instance of an Airflow ``context``.

    :param context: the task's context (``ti``, ``run_id``).
    :param fingerprint: the request's fingerprint.
    :param row_key: the batch row's key, for a batch.
    """
    ti = context["ti"]
    return client_request_id(
        dag_id=getattr(ti, "dag_id", None),
        task_id=getattr(ti, "task_id", None),
        run_id=context.get("run_id") or getattr(ti, "run_id", None),
        map_index=getattr(ti, "map_index", -1),
        row_key=row_key,
        fingerprint=fingerprint,
    )


def from_sidecar(context: Any, sidecar: dict[str, Any] | None) -> str | None:
    """The id a task's POST carried, rebuilt from its sidecar's request fingerprint (it never changes
    between tries); None when the sidecar names no request.

    :param context: the task's context.
    :param sidecar: the ``.kling.json`` sidecar (or the stored state) of the task's generation.
    """
    fingerprint = (sidecar or {}).get("request")
    return from_context(context, str(fingerprint)) if fingerprint else None


__all__ = ["CLIENT_REQUEST_ID", "CLIENT_REQUEST_ID_HEADER", "client_request_id", "from_context"]
