"""One generation whose POST answer the test makes the service lose: it is found again, not paid twice."""

from __future__ import annotations

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import recorded_dag

with recorded_dag("kling_exactly_once", poll_interval=0.2) as dag:
    KlingImageToVideoOperator(
        task_id="lost_answer",
        image_url="https://images.example.org/harbour.jpg",
        prompt="lost_answer: a lighthouse at dusk",
    )
