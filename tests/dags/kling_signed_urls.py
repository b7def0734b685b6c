"""Deferred tasks whose video URL is signed: the trigger's event holds it without its signature.

The test scripts every poll's answer (a URL that works only with its query string), so each task must
read the generation again when it resumes. No retries: the first try has to get it right.

- ``kling_signed_urls_operator``: a deferrable operator that downloads the video;
- ``kling_signed_urls_sensor``: a submit-only operator, then a deferrable sensor.
"""

from __future__ import annotations

import os

from airflow.providers.common.compat.sdk import chain

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from airflow_provider_kling.sensors.kling import KlingGenerationSensor
from tests.dags.kling_common import out_dir, recorded_dag

IMAGE = "https://images.example.org/harbour.png"

with recorded_dag("kling_signed_urls_operator", retries=0) as operator_dag:
    KlingImageToVideoOperator(
        task_id="deferred_download",
        image_url=IMAGE,
        prompt="deferred_download: boats rock at the quay",
        deferrable=True,
        poll_interval=0.2,
        download_to=os.path.join(out_dir(), "signed") + "/",
    )

with recorded_dag("kling_signed_urls_sensor", retries=0) as sensor_dag:
    submit = KlingImageToVideoOperator(
        task_id="submit",
        image_url=IMAGE,
        prompt="submit: gulls over the harbour",
        wait_for_completion=False,
    )
    wait = KlingGenerationSensor(
        task_id="wait",
        generation_id="{{ ti.xcom_pull(task_ids='submit', key='generation_id') }}",
        deferrable=True,
        poke_interval=0.2,
        timeout=60,
    )
    chain(submit, wait)
