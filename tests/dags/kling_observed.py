"""Generations observed through OpenLineage and metrics (run by tests/integration/test_observability.py).

One task waits in the worker, one in the triggerer, one ends in the service's error.
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator, KlingTextToVideoOperator

OUT = os.environ.get("KLING_TEST_OUT", "/tmp/kling-observed")

with DAG(
    dag_id="kling_observed",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args={"retries": 0, "poll_interval": 0.2},
) as dag:
    KlingImageToVideoOperator(
        task_id="in_worker",
        image_url="https://images.example.com/cat.png?X-Amz-Signature=secret-signature",
        tail_image_url="https://images.example.com/last.png",
        prompt="a cat turns its head",
        deferrable=False,
        download_to=f"{OUT}/videos/",
    )
    KlingTextToVideoOperator(
        task_id="in_triggerer",
        model="klingai/video-v3-pro-text-to-video",
        prompt="a lighthouse at dusk",
        deferrable=True,
    )
    KlingImageToVideoOperator(
        task_id="refused_by_the_service",
        image_url="https://images.example.com/dog.png",
        prompt="[error] a dog",
        deferrable=False,
    )
