"""One generation whose POST answer the test makes the service lose: it is found again, not paid twice."""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import recorded_retries

with DAG(
    dag_id="kling_exactly_once",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=recorded_retries(poll_interval=0.2),
) as dag:
    KlingImageToVideoOperator(
        task_id="lost_answer",
        image_url="https://images.example.org/harbour.jpg",
        prompt="lost_answer: a lighthouse at dusk",
    )
