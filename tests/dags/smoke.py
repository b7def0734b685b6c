from __future__ import annotations

import os

import pendulum

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

OUT = os.environ.get("KLING_TEST_OUT", "/tmp/kling-smoke")

with DAG("smoke", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    KlingImageToVideoOperator(
        task_id="gen", image_url="https://example.com/a.png", prompt="a cat {{ ds }}",
        poll_interval=0.2, download_to=OUT + "/", deferrable=True, overwrite=True,
    )
    KlingImageToVideoOperator(
        task_id="gen_sync", image_url="https://example.com/a.png", prompt="a cat",
        poll_interval=0.2, download_to=OUT + "/sync.mp4", deferrable=False, overwrite=True,
    )
