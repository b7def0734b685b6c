"""A retry that Airflow starts at the last deferral's resume method instead of ``execute``.

Airflow 3.0 (to 3.1.0) keeps a task instance's ``next_method`` and ``next_kwargs`` when a try ends
(apache/airflow#56704, fixed in 3.1.1): the next try, a retry, skips ``execute`` and resumes the previous
try's deferral with its old trigger event, so it never submits, checks or sends anything anew. The operators
and the sensor record the try that deferred in XCom (Airflow keeps a resuming task's XComs) and start such
a stale resumption over from ``execute`` (:class:`RetrySafeDeferral`, their common base). Elsewhere nothing
is recorded or read.

Imported at every DAG parse (by the operators and the sensor): only ``BaseOperator``, which they import
anyway, and the version check load here.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_kling.version_compat import AIRFLOW_RETRY_KEEPS_DEFERRAL

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.common.compat.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_kling.hooks.kling import KlingHook

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


class RetrySafeDeferral(BaseOperator):
    """A deferring operator whose retry never resumes an earlier try's deferral.

    Subclasses defer with :meth:`defer_try` and put their own handling of a resumed deferral (a timed-out
    deferral, say) in :meth:`resume_deferral`; sensors list it before ``BaseSensorOperator``. They hold
    ``kling_conn_id`` and ``poll_interval``, which every Kling trigger takes, and share one
    :attr:`hook` per task.
    """

    if TYPE_CHECKING:
        kling_conn_id: str
        poll_interval: float

    @cached_property
    def hook(self) -> KlingHook:
        """One hook (one HTTP session, one connection read) for the whole task."""
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id)

    def defer_try(
        self,
        context: Context,
        trigger_class: Callable[..., BaseTrigger],
        end_time: float,
        *,
        kwargs: dict[str, Any] | None = None,
        **fields: Any,
    ) -> NoReturn:
        """Record which try defers, then defer to a Kling trigger, resuming in ``execute_complete``.

        :param context: the task's context.
        :param trigger_class: the trigger to wait in; it gets this task's connection id and poll
            interval, ``end_time`` and ``fields``.
        :param end_time: the trigger's own deadline (epoch seconds). Airflow's deferral timeout is a
            minute past it, so the trigger reports the timeout itself and Airflow's stays a backstop.
        :param kwargs: keywords ``execute_complete`` gets besides the event.
        :param fields: the trigger's own arguments (the generation id, the pending rows, ...).
        """
        remember_deferring_try(context)
        trigger = trigger_class(
            kling_conn_id=self.kling_conn_id, poll_interval=self.poll_interval, end_time=end_time, **fields
        )
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs=kwargs,
            timeout=timedelta(seconds=max(1.0, end_time - time.time()) + 60),
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume this try's deferral; a retry that Airflow starts at an earlier try's runs ``execute``."""
        if is_stale_resumption(context, self.task_id, self.log):
            return self.execute(context)
        return self.resume_deferral(next_method, next_kwargs, context)

    def resume_deferral(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume this try's own deferral (Airflow's ``resume_execution``).

        :param next_method: the method the deferral named, or ``__fail__`` when it timed out.
        :param next_kwargs: its keywords (the trigger's event among them).
        :param context: the task's context.
        """
        return super().resume_execution(next_method, next_kwargs, context)


__all__ = ["DEFERRED_TRY_XCOM_KEY", "RetrySafeDeferral", "is_stale_resumption", "remember_deferring_try"]
