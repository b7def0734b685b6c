"""A chain where each step's output is the next step's input (run by tests/integration/test_chaining.py).

``image_to_video`` (a local PNG, sent as a data URI) -> ``edit`` (o1 video edit of the first step's
``.output``: its local video, staged to the connection's ``input_staging`` and presigned) ->
``avatar`` (avatar-pro, its audio a local file staged the same way). Every step downloads into
``<KLING_TEST_OUT>/videos/`` and leaves ``skip_existing`` at its default, so a second run pays nothing.
``KLING_CHAIN_IMAGE`` and ``KLING_CHAIN_AUDIO`` name the local files.
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator, KlingVideoOperator
from tests.dags.kling_common import out_dir

VIDEOS = os.path.join(out_dir(), "videos") + "/"
IMAGE = os.environ.get("KLING_CHAIN_IMAGE", "/tmp/kling-chain/portrait.png")
AUDIO = os.environ.get("KLING_CHAIN_AUDIO", "/tmp/kling-chain/speech.mp3")

with DAG(
    dag_id="kling_chain",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args={"retries": 0, "poll_interval": 0.2, "deferrable": False, "download_to": VIDEOS},
) as dag:
    clip = KlingImageToVideoOperator(
        task_id="image_to_video",
        image_url=IMAGE,
        prompt="chain: a lighthouse at dusk, waves rolling in",
    )
    edit = KlingVideoOperator(
        task_id="edit",
        model="klingai/video-o1-video-to-video-edit",
        prompt="chain: make it a watercolour painting",
        parameters={"video_url": clip.output, "keep_audio": False},
    )
    avatar = KlingVideoOperator(
        task_id="avatar",
        model="klingai/avatar-pro",
        prompt="chain: the keeper tells the story",
        parameters={"image_url": IMAGE, "audio_url": AUDIO},
    )
    edit >> avatar
