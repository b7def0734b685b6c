"""A Kling task whose first try fails after the paid POST, run on an Airflow without task_state_store.

tests/integration/test_airflow2.py runs it with ``airflow dags test`` and an emulator that spoils the
first video download: the retry cannot find the earlier generation there, says so, and submits a new one.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

with DAG(
    "kling_no_state_store",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1),
    catchup=False,
    tags=["kling", "test"],
) as dag:
    KlingImageToVideoOperator(
        task_id="generate",
        image_url="https://example.com/first-frame.png",
        prompt="a paper boat drifts down a gutter",
        poll_interval=0.1,
        timeout=60,
        download_to=os.environ.get("KLING_TEST_OUT", "/tmp/kling-no-state-store") + "/",
        overwrite=True,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )
