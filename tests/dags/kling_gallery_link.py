"""The "Kling video" extra link with and without a download (tests/unit/links/test_gallery_link.py)."""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from tests.dags.kling_common import out_dir

with DAG(
    dag_id="kling_gallery_link",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args={"poll_interval": 0.2},
) as dag:
    KlingTextToVideoOperator(
        task_id="downloaded",
        prompt="gallery_link: a kite over the dunes",
        download_to=os.path.join(out_dir(), "videos") + "/",
    )
    KlingTextToVideoOperator(task_id="not_downloaded", prompt="gallery_link: a kite, left at the service")
