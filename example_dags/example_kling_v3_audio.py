"""Kling v3: one still image to an 8-second clip with its own soundtrack, downloaded.

``klingai/video-v3-pro-image-to-video`` takes durations from 3 to 15 seconds and generates audio
with the video. Fields the image-to-video operator has no named argument for go in ``parameters``
(here ``generate_audio``); every field is checked against the model catalog before the paid POST.

The prompt is a DAG param: trigger the DAG by hand (no logical date needed) and edit it in the
trigger form, or run it as written::

    airflow dags test example_kling_v3_audio

Environment (defaults suit the real service): ``KLING_IMAGE_URL`` (the first frame, a public jpg/png
URL), ``KLING_DOWNLOAD_DIR``, ``KLING_POLL_INTERVAL`` (default 10 s), ``KLING_TIMEOUT`` (default 1800 s).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

MODEL = "klingai/video-v3-pro-image-to-video"
IMAGE_URL = os.environ.get("KLING_IMAGE_URL", "https://upload.wikimedia.org/wikipedia/commons/3/3a/Cat03.jpg")
DOWNLOAD_DIR = os.environ.get("KLING_DOWNLOAD_DIR") or os.path.join(
    os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos"
)
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
TIMEOUT = timedelta(seconds=float(os.environ.get("KLING_TIMEOUT", "1800")))
PROMPT = "The cat wakes up, stretches and meows softly; birds chirp outside the window"

with DAG(
    dag_id="example_kling_v3_audio",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
    params={"prompt": Param(PROMPT, type="string", minLength=1, description="What is seen and heard")},
) as dag:
    KlingImageToVideoOperator(
        task_id="image_to_video_with_audio",
        model=MODEL,
        image_url=IMAGE_URL,
        prompt="{{ params.prompt }}",
        # v3 models take 3 to 15 seconds.
        duration=8,
        negative_prompt="blur, distortion, text",
        parameters={"generate_audio": True},
        # Wait in the triggerer: a v3 clip takes minutes.
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
        download_to=os.path.join(DOWNLOAD_DIR, "v3_audio") + "/",
    )
