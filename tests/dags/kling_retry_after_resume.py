"""Try 1 of a deferrable task is lost after its deferral resumed; try 2 must start from ``execute``.

Airflow 3.0 resumes such a retry at the old deferral (apache/airflow#56704): the operator starts it over
(airflow_provider_kling/utils/deferral.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator


class LostAfterResumeOperator(KlingImageToVideoOperator):
    def execute_complete(self, context: Any, event: Any, **kwargs: Any) -> Any:
        if context["ti"].try_number == 1:
            raise RuntimeError("worker lost after the deferral resumed")
        return super().execute_complete(context, event, **kwargs)


with DAG(
    dag_id="kling_retry_after_resume",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=0)},
) as dag:
    LostAfterResumeOperator(
        task_id="lost_after_resume",
        image_url="https://images.example.org/harbour.jpg",
        prompt="lost_after_resume: gulls over the pier",
        deferrable=True,
        poll_interval=0.2,
    )
