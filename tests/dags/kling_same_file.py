"""Two mapped instances given the same download_to file (issue 10: a suspected race)."""

from __future__ import annotations

import os

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir, recorded_dag

with recorded_dag("kling_same_file", poll_interval=0.2) as dag:
    KlingImageToVideoOperator.partial(
        task_id="same_file",
        image_url="https://images.example.org/river.png",
        download_to=os.path.join(out_dir(), "shared", "clip.mp4"),
    ).expand(prompt=["same_file: a heron lands", "same_file: a heron takes off"])
