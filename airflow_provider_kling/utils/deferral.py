"""A retry that Airflow starts at the last deferral's resume method instead of ``execute``.

Airflow 3.0 (to 3.1.0) keeps a task instance's ``next_method`` and ``next_kwargs`` when a try ends
(apache/airflow#56704, fixed in 3.1.1): the next try, a retry, skips ``execute`` and resumes the previous
try's deferral with its old trigger event, so it never submits, checks or sends anything anew. The operators
and the sensor record the try that deferred in XCom (Airflow keeps a resuming task's XComs) and start such
a stale resumption over from ``execute``. Elsewhere nothing is recorded or read.

Imported at every DAG parse (by the operators and the sensor): only the version check loads here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_kling.version_compat import AIRFLOW_RETRY_KEEPS_DEFERRAL

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: XCom key holding the try number that last deferred (only where Airflow keeps the deferral across tries).
DEFERRED_TRY_XCOM_KEY = "kling_deferred_try"


def remember_deferring_try(context: Context) -> None:
    """Record, before deferring, which try defers (read back by :func:`is_stale_resumption`).

    :param context: the task's context.
    """
    if AIRFLOW_RETRY_KEEPS_DEFERRAL:
        ti = context["ti"]
        ti.xcom_push(key=DEFERRED_TRY_XCOM_KEY, value=ti.try_number)


def is_stale_resumption(context: Context, task_id: str, log: Any) -> bool:
    """Whether Airflow resumes a deferral that an earlier try made (a retry that skipped ``execute``).

    :param context: the task's context.
    :param task_id: the resuming task's id.
    :param log: the task's logger, told when the try starts over from ``execute``.
    :return: ``True`` when the try resuming is not the one that deferred.
    """
    ti = context.get("ti")
    if not AIRFLOW_RETRY_KEEPS_DEFERRAL or ti is None:
        return False
    # The task's own map index: 3.0 pulls every map index's value when none is given.
    deferred = ti.xcom_pull(task_ids=task_id, key=DEFERRED_TRY_XCOM_KEY, map_indexes=ti.map_index)
    if not isinstance(deferred, int) or deferred == ti.try_number:
        return False
    log.info("Try %s starts from execute (Airflow resumed the deferral of try %s)", ti.try_number, deferred)
    return True


__all__ = ["DEFERRED_TRY_XCOM_KEY", "is_stale_resumption", "remember_deferring_try"]
