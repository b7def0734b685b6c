"""Odd answers from the service, each DAG driven by the test through the emulator's control API.

- ``kling_answers_omni``: a v3 omni model, whose answer holds ``video`` as a list (issue 10 #3);
- ``kling_answers_no_url``: "completed" with no video URL (issue 10 #5).
"""

from __future__ import annotations

import os

from airflow.providers.common.compat.sdk import chain

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir, recorded_dag

OMNI = "klingai/video-v3-omni-720p-image-to-video"
IMAGE = "https://images.example.org/garden.png"

with recorded_dag("kling_answers_omni", poll_interval=0.2, trigger_rule="all_done") as omni_dag:
    chain(
        # The test scripts this one's poll: two videos in the list.
        KlingImageToVideoOperator(
            task_id="omni_two_videos",
            model=OMNI,
            image_url=IMAGE,
            prompt="omni_two_videos: a flower opens",
            duration=5,
            download_to=os.path.join(out_dir(), "omni_two") + "/",
        ),
        # The emulator's own omni answer: a list of one, in a deferrable task.
        KlingImageToVideoOperator(
            task_id="omni_emulated",
            model=OMNI,
            image_url=IMAGE,
            prompt="omni_emulated: petals fall",
            duration=5,
            deferrable=True,
            download_to=os.path.join(out_dir(), "omni_emulated") + "/",
        ),
    )

with recorded_dag("kling_answers_no_url", poll_interval=0.2) as no_url_dag:
    KlingImageToVideoOperator(
        task_id="completed_without_url",
        image_url=IMAGE,
        prompt="completed_without_url: moss on a stone",
        download_to=os.path.join(out_dir(), "no_url") + "/",
    )
