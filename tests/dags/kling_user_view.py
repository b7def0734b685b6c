"""What a user sees: the extra link's XCom, log lines, file names (issue 11 #6 and #9)."""

from __future__ import annotations

import os

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir, recorded_dag

IMAGE = "https://images.example.org/valley.jpg"

with recorded_dag("kling_user_view", poll_interval=0.2) as dag:
    KlingImageToVideoOperator(
        task_id="local_download",
        image_url=IMAGE,
        prompt="user_view: mist fills the valley",
        download_to=os.path.join(out_dir(), "videos") + "/",
    )
    # Refused before anything is sent: duration 7 is not a choice of this model.
    KlingImageToVideoOperator(
        task_id="fails_before_submit", image_url=IMAGE, prompt="user_view: never sent", duration="7"
    )
