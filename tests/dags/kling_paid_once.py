"""Failures around the paid POST that an Airflow retry must not turn into a second payment."""

from __future__ import annotations

import os

from airflow.providers.common.compat.sdk import chain

from tests.dags.kling_common import image_to_video, out_dir, recorded_dag

IMAGE = "https://images.example.org/harbour.jpg"

with recorded_dag("kling_paid_once", trigger_rule="all_done", poll_interval=0.2) as dag:
    chain(
        # The test answers this POST with a 500 after the generation was created: the outcome is
        # unknown to the task, so it fails without Airflow's retries rather than pay again.
        image_to_video("ambiguous_post", "boats at dawn", IMAGE),
        # download_to names a file that already exists: refused before anything is paid for.
        image_to_video(
            "existing_file", "gulls over the pier", IMAGE, download_to=os.path.join(out_dir(), "taken.mp4")
        ),
    )
