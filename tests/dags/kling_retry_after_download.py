"""Try 1 downloads the video, then its worker dies; try 2 must reconnect and keep that download
(issue 10 #4)."""

from __future__ import annotations

import os
from typing import Any

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir, recorded_dag


class DieAfterDownloadOperator(KlingImageToVideoOperator):
    def _finish(self, context: Any, generation: Any, **kwargs: Any) -> Any:
        result = super()._finish(context, generation, **kwargs)
        if context["ti"].try_number == 1:
            raise RuntimeError(f"worker lost after downloading {result['video_path']}")
        return result


with recorded_dag("kling_retry_after_download", poll_interval=0.2) as dag:
    DieAfterDownloadOperator(
        task_id="die_after_download",
        image_url="https://images.example.org/harbour.jpg",
        prompt="die_after_download: a kite over the beach",
        download_to=os.path.join(out_dir(), "videos") + "/",
    )
