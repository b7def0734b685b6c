"""Submit a generation without waiting, then wait for it with a deferrable sensor.

Splitting submit and wait lets other work run in between and keeps the paid POST in a task of its
own: ``submit`` returns as soon as the service has accepted the job and pushes the generation id
to XCom (key ``generation_id``). ``wait_for_video`` waits in the triggerer, so no worker slot is held
for the minutes a clip takes, and returns the finished generation (video URL, size, usage).
``download`` then fetches the file with the hook.

Environment (defaults suit the real service): ``KLING_DOWNLOAD_DIR``, ``KLING_IMAGE_URL``,
``KLING_POLL_INTERVAL`` (default 10 s), ``KLING_TIMEOUT`` (default 1800 s).
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from airflow_provider_kling.sensors.kling import KlingGenerationSensor

DOWNLOAD_DIR = os.environ.get("KLING_DOWNLOAD_DIR") or os.path.join(
    os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos"
)
IMAGE_URL = os.environ.get("KLING_IMAGE_URL", "https://upload.wikimedia.org/wikipedia/commons/3/3a/Cat03.jpg")
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
TIMEOUT = float(os.environ.get("KLING_TIMEOUT", "1800"))

with DAG(
    dag_id="example_kling_sensor",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
) as dag:
    submit = KlingImageToVideoOperator(
        task_id="submit",
        image_url=IMAGE_URL,
        prompt="The cat stretches and yawns, then settles back down, cozy window light",
        wait_for_completion=False,
    )

    wait_for_video = KlingGenerationSensor(
        task_id="wait_for_video",
        generation_id="{{ ti.xcom_pull(task_ids='submit', key='generation_id') }}",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
    )

    @task
    def download(generation: dict[str, Any]) -> str:
        """Fetch the finished clip (its signed URL expires, so right away)."""
        from airflow_provider_kling.hooks.kling import KlingHook, safe_file_name

        return KlingHook().download_video(
            generation["video_url"],
            os.path.join(DOWNLOAD_DIR, "sensor") + "/",
            file_name=f"{safe_file_name(generation['generation_id'])}.mp4",
            expected_size=generation.get("file_size"),
        )

    submit >> wait_for_video
    download(wait_for_video.output)
