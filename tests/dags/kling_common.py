"""Shared by the test DAGs: where they write, failure recorders, a deferral that times out, and DAG
builders the test DAG files call (no DAG here)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pendulum
from airflow.listeners import hookimpl
from airflow.providers.common.compat.sdk import DAG, BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kling.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_2_PLUS, AIRFLOW_V_3_3_PLUS

try:
    from airflow.models.trigger import TriggerFailureReason
except ImportError:  # Airflow 2.11: a deferral's timeout carries no reason
    TriggerFailureReason = None


#: The start date of every test DAG (they run only when triggered).
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def out_dir() -> str:
    """The folder a test gave the DAGs through KLING_TEST_OUT."""
    return os.environ.get("KLING_TEST_OUT", "/tmp/kling-test-dags")


#: Failure callbacks waiting for their task's exception, by (dag_id, task_id, map_index, try_number).
_WAITING: dict[tuple[str, str, int, int], Callable[[BaseException | None], None]] = {}


class _FailureListener:
    """Hands a waiting failure callback the exception Airflow gives listeners (see :func:`with_exception`)."""

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        key = (task_instance.dag_id, task_instance.task_id, task_instance.map_index, task_instance.try_number)
        write = _WAITING.pop(key, None)
        if write is not None:
            write(error if isinstance(error, BaseException) else None)


_LISTENER = _FailureListener()


def with_exception(context: Any, write: Callable[[BaseException | None], None]) -> None:
    """Call ``write`` with the exception a failure or retry callback is about.

    Airflow 2.11 and 3.3+ put it in the callback's context. Before 3.3, ``dag.test()`` hands it to
    ``finalize()`` but not to the callbacks' context; ``finalize()`` then gives it to the
    ``on_task_instance_failed`` listeners, right after the callbacks: ``write`` waits for that.
    """
    exc = context.get("exception")
    if exc is not None or AIRFLOW_V_3_3_PLUS or not AIRFLOW_V_3_0_PLUS:
        write(exc)
        return
    if AIRFLOW_V_3_2_PLUS:  # the Task SDK's own listener manager, which its task runner calls
        from airflow.sdk.listener import get_listener_manager
    else:
        from airflow.listeners.listener import get_listener_manager

    manager = get_listener_manager()
    if not manager.pm.is_registered(_LISTENER):
        manager.add_listener(_LISTENER)
    ti = context["ti"]
    _WAITING[(ti.dag_id, ti.task_id, ti.map_index, ti.try_number)] = write


def record_failure(context: Any) -> None:
    """on_failure / on_retry callback: append what failed, on which try and why, to events.jsonl."""
    ti = context["ti"]

    def write(exc: BaseException | None) -> None:
        line = {
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "try_number": ti.try_number,
            "exception": type(exc).__name__ if exc is not None else None,
            "message": str(exc) if exc is not None else None,
        }
        os.makedirs(out_dir(), exist_ok=True)
        with open(os.path.join(out_dir(), "events.jsonl"), "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    with_exception(context, write)


def record_resume(task_id: str, generation_id: str, status: str | None) -> None:
    """What a retry found for its stored generation (None: it submitted anew), to resumed.jsonl."""
    os.makedirs(out_dir(), exist_ok=True)
    line = {"task_id": task_id, "generation_id": generation_id, "status": status}
    with open(os.path.join(out_dir(), "resumed.jsonl"), "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def recorded_retries(**overrides: Any) -> dict[str, Any]:
    """default_args for test DAGs: two immediate retries, each failure and retry recorded."""
    return {
        "retries": 2,
        "retry_delay": timedelta(seconds=0),
        "on_retry_callback": record_failure,
        "on_failure_callback": record_failure,
        **overrides,
    }


def recorded_dag(dag_id: str, **overrides: Any) -> DAG:
    """A test DAG run by hand, its tasks retried twice at once, each failure and retry recorded.

    :param dag_id: the DAG's id.
    :param overrides: default_args that replace or add to :func:`recorded_retries`'s.
    """
    return DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=START,
        default_args=recorded_retries(**overrides),
    )


def deployment_dag(dag_id: str, doc_md: str, **kwargs: Any) -> DAG:
    """A DAG of the deployment tests (tests/e2e/), run by hand, tagged ``kling`` and ``e2e``.

    :param dag_id: the DAG's id.
    :param doc_md: what the DAG is for, shown in Airflow's UI.
    :param kwargs: more DAG arguments.
    """
    return DAG(
        dag_id, schedule=None, start_date=START, catchup=False, tags=["kling", "e2e"], doc_md=doc_md, **kwargs
    )


def image_to_video(task_id: str, scene: str, image_url: str, **kwargs: Any) -> BaseOperator:
    """A ``KlingImageToVideoOperator`` whose prompt starts with its task id (the tests find its POST by it).

    :param task_id: the task's id, and the prompt's first word.
    :param scene: the rest of the prompt (emulator markers such as ``[error]`` included).
    :param image_url: the image to animate.
    :param kwargs: more operator arguments.
    """
    from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

    return KlingImageToVideoOperator(
        task_id=task_id, image_url=image_url, prompt=f"{task_id}: {scene}", **kwargs
    )


class NoEventTrigger(BaseTrigger):
    """A trigger that ends without an event, as if no triggerer had ever run it.

    ``dag.test()`` runs a deferred task's trigger inline and, when it ends without an event, resumes
    the task with the ``method_name`` and ``kwargs`` it deferred with: deferring to ``"__fail__"`` with
    ``{"error": TRIGGER_TIMEOUT}`` then resumes the task exactly as Airflow's scheduler does when a
    deferral's timeout passes with no triggerer running (see :func:`defer_and_time_out`).
    """

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("tests.dags.kling_common.NoEventTrigger", {})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        return
        yield  # an async generator that yields nothing


#: What Airflow's scheduler stores as next_kwargs when a deferral times out.
DEFERRAL_TIMEOUT_KWARGS = {"error": TriggerFailureReason.TRIGGER_TIMEOUT} if TriggerFailureReason else {}


def defer_and_time_out(task: Any, timeout: Any, record: dict[str, Any] | None = None) -> None:
    """Defer ``task`` so that Airflow resumes it as after a deferral timeout (``__fail__``).

    :param record: written to ``deferrals.jsonl`` (with the task id and the deferral's timeout).
    """
    os.makedirs(out_dir(), exist_ok=True)
    line = {"task_id": task.task_id, "timeout": None if timeout is None else timeout.total_seconds()}
    with open(os.path.join(out_dir(), "deferrals.jsonl"), "a", encoding="utf-8") as out:
        out.write(json.dumps({**line, **(record or {})}) + "\n")
    BaseOperator.defer(
        task,
        trigger=NoEventTrigger(),
        method_name="__fail__",
        kwargs=DEFERRAL_TIMEOUT_KWARGS,
        timeout=timeout,
    )


def record_bad_input_failure(context: Any) -> None:
    """Append the task's error to the file the test names (nothing when run elsewhere)."""
    path = os.environ.get("KLING_BAD_INPUT_LOG")
    if not path:
        return
    dag_id, task_id = context["dag"].dag_id, context["ti"].task_id

    def write(exc: BaseException | None) -> None:
        line = {"dag_id": dag_id, "task_id": task_id, "type": type(exc).__name__, "message": str(exc)}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    with_exception(context, write)


def record_bad_input_start(context: Any) -> None:
    """on_execute_callback: note when each task starts, so the test counts requests per task."""
    path = os.environ.get("KLING_BAD_INPUT_LOG")
    if not path:
        return
    line = {
        "dag_id": context["dag"].dag_id,
        "task_id": context["ti"].task_id,
        "started": time.time(),
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


#: default_args of the bad-input DAGs: no retry, each task's start and failure recorded.
BAD_INPUT_RECORDED = {
    "retries": 0,
    "on_execute_callback": record_bad_input_start,
    "on_failure_callback": record_bad_input_failure,
}


def one_task_per_case(
    dag_id: str, task_class: type[BaseOperator], valid: dict[str, Any], cases: dict[str, dict[str, Any]]
) -> DAG:
    """A bad-input DAG: one ``task_class`` task per case, each a valid call with the case's changes.

    Templates render natively (an int, a list or None can reach the task); no retry; each task's
    start and failure recorded (:data:`BAD_INPUT_RECORDED`).

    :param dag_id: the DAG's id.
    :param task_class: the operator or sensor under test.
    :param valid: the arguments of a valid call.
    :param cases: task id -> the arguments that differ from ``valid``.
    """
    with DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1),
        render_template_as_native_obj=True,
        default_args=BAD_INPUT_RECORDED,
    ) as dag:
        for task_id, overrides in cases.items():
            task_class(task_id=task_id, **{**valid, **overrides})
    return dag
