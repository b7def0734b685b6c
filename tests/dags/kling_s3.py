"""One image-to-video task whose image and destination come from the environment.

Run by tests/integration/test_s3.py.

``KLING_S3_IMAGE`` is e.g. ``s3://kling_s3@bucket/private/cat.png`` (presigned for the service) and
``KLING_S3_DEST`` e.g. ``s3://kling_s3@bucket/videos/``; ``skip_existing`` reuses a video already there.
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

with DAG(
    dag_id="kling_s3",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"prompt": os.environ.get("KLING_S3_PROMPT", "s3: a cat blinks")},
) as dag:
    KlingImageToVideoOperator(
        task_id="to_s3",
        image_url=os.environ.get("KLING_S3_IMAGE", "https://images.example.org/cat.png"),
        prompt="{{ params.prompt }}",
        download_to=os.environ.get("KLING_S3_DEST", "/tmp/kling-s3"),
        skip_existing=True,
        deferrable=True,
        poll_interval=0.2,
        retries=0,
    )
