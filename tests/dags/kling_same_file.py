"""Two mapped instances given the same download_to file (issue 10: a suspected race)."""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir, recorded_retries

with DAG(
    dag_id="kling_same_file",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=recorded_retries(poll_interval=0.2),
) as dag:
    KlingImageToVideoOperator.partial(
        task_id="same_file",
        image_url="https://images.example.org/river.png",
        download_to=os.path.join(out_dir(), "shared", "clip.mp4"),
    ).expand(prompt=["same_file: a heron lands", "same_file: a heron takes off"])
