"""Failures around the paid POST that an Airflow retry must not turn into a second payment."""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG, chain

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir, record_failure

IMAGE = "https://images.example.org/harbour.jpg"

with DAG(
    dag_id="kling_paid_once",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=0),
        "trigger_rule": "all_done",
        "on_retry_callback": record_failure,
        "on_failure_callback": record_failure,
        "poll_interval": 0.2,
    },
) as dag:
    chain(
        # The test answers this POST with a 500 after the generation was created: the outcome is
        # unknown to the task, so it fails without Airflow's retries rather than pay again.
        KlingImageToVideoOperator(
            task_id="ambiguous_post", image_url=IMAGE, prompt="ambiguous_post: boats at dawn"
        ),
        # download_to names a file that already exists: refused before anything is paid for.
        KlingImageToVideoOperator(
            task_id="existing_file",
            image_url=IMAGE,
            prompt="existing_file: gulls over the pier",
            download_to=os.path.join(out_dir(), "taken.mp4"),
        ),
    )
