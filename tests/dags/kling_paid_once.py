"""Failures around the paid POST that an Airflow retry must not turn into a second payment."""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG, chain

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir, recorded_retries

IMAGE = "https://images.example.org/harbour.jpg"

with DAG(
    dag_id="kling_paid_once",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=recorded_retries(trigger_rule="all_done", poll_interval=0.2),
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
