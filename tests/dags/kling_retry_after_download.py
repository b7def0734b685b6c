"""Try 1 downloads the video, then its worker dies; try 2 must reconnect and keep that download
(issue 10 #4)."""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir, recorded_retries


class DieAfterDownloadOperator(KlingImageToVideoOperator):
    def _finish(self, context: Any, generation: Any, **kwargs: Any) -> Any:
        result = super()._finish(context, generation, **kwargs)
        if context["ti"].try_number == 1:
            raise RuntimeError(f"worker lost after downloading {result['video_path']}")
        return result


with DAG(
    dag_id="kling_retry_after_download",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=recorded_retries(poll_interval=0.2),
) as dag:
    DieAfterDownloadOperator(
        task_id="die_after_download",
        image_url="https://images.example.org/harbour.jpg",
        prompt="die_after_download: a kite over the beach",
        download_to=os.path.join(out_dir(), "videos") + "/",
    )
