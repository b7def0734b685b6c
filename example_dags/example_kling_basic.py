"""Turn one still image into a 5-second video clip with Kling and download it.

Settings come from the environment, with defaults for the real service:

- ``KLING_IMAGE_URL``: the first frame (a public jpg/png URL).
- ``KLING_DOWNLOAD_DIR``: where the MP4 goes (default ``$AIRFLOW_HOME/kling_videos``, or
  ``/tmp/kling_videos`` without AIRFLOW_HOME).
- ``KLING_POLL_INTERVAL``: seconds between status polls (default 10; a 5 s clip takes 4-5 minutes).
- ``KLING_TIMEOUT``: seconds to wait for the video (default 1800).

The ``kling_default`` connection holds the API key, for instance::

    export AIRFLOW_CONN_KLING_DEFAULT='{"conn_type": "kling", "password": "<your Apilaplas key>"}'
    airflow dags test example_kling_basic

Against the local emulator (``python -m airflow_provider_kling.emulator``) set the connection's host
to the emulator's URL and ``KLING_POLL_INTERVAL=1``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

IMAGE_URL = os.environ.get("KLING_IMAGE_URL", "https://upload.wikimedia.org/wikipedia/commons/3/3a/Cat03.jpg")
DOWNLOAD_DIR = os.environ.get("KLING_DOWNLOAD_DIR") or os.path.join(
    os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos"
)
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
TIMEOUT = timedelta(seconds=float(os.environ.get("KLING_TIMEOUT", "1800")))

with DAG(
    dag_id="example_kling_basic",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
) as dag:
    KlingImageToVideoOperator(
        task_id="image_to_video",
        image_url=IMAGE_URL,
        prompt="The cat slowly turns its head towards the camera and blinks, soft daylight",
        negative_prompt="blur, distortion, text",
        duration="5",
        cfg_scale=0.5,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
        # One file per run: the generation id names the file inside this folder.
        download_to=os.path.join(DOWNLOAD_DIR, "basic") + "/",
    )
