"""The paid POST succeeds, then its id cannot be recorded (issue 10 #1).

``task_state_store.set`` raises as it would when the Execution API answers 503: the task must fail
without Airflow's retries (a retry would not find the id and would pay again), naming the paid id.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import recorded_dag


class ExecutionApiUnavailable(RuntimeError):
    """What a worker sees when the Execution API is down."""


class UnwritableStore:
    """task_state_store whose reads work and whose writes fail."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.get(key, default)

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        raise ExecutionApiUnavailable("Execution API answered 503 Service Unavailable")


class StoreDownOperator(KlingImageToVideoOperator):
    def execute(self, context: Any) -> Any:
        context["task_state_store"] = UnwritableStore(context["task_state_store"])
        return super().execute(context)


with recorded_dag("kling_paid_unrecorded", poll_interval=0.2) as dag:
    StoreDownOperator(
        task_id="store_down",
        image_url="https://images.example.org/harbour.jpg",
        prompt="store_down: a ferry leaves the harbour",
    )
