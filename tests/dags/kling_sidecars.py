"""Downloads and their sidecars (run by tests/integration/test_sidecars.py).

``skip_dag``: one ``skip_existing`` task on the ``kling_sidecars`` connection (the test points it at
one service, then another), downloading into ``<out>/videos/``.

``crash_dag``: try 1 downloads the video, then stops before its sidecar exists (the sidecar is
removed, as a crash between the two writes leaves it); try 2 must keep that video without paying again.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator, sidecar_path
from tests.dags.kling_common import out_dir, recorded_dag

VIDEOS = os.path.join(out_dir(), "videos") + "/"


class CrashBeforeSidecarOperator(KlingImageToVideoOperator):
    def _finish(self, context: Any, generation: Any, **kwargs: Any) -> Any:
        result = super()._finish(context, generation, **kwargs)
        if context["ti"].try_number == 1:
            from pathlib import Path

            sidecar_path(Path(result["video_path"])).unlink()
            raise RuntimeError(f"worker lost between {result['video_path']} and its sidecar")
        return result


with DAG(
    dag_id="kling_sidecars_skip",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"prompt": "skip: a fox crosses the snow"},
    default_args={"retries": 0, "poll_interval": 0.2},
) as skip_dag:
    KlingImageToVideoOperator(
        task_id="skip",
        kling_conn_id="kling_sidecars",
        image_url="https://images.example.org/fox.png",
        prompt="{{ params.prompt }}",
        download_to=VIDEOS,
        skip_existing=True,
        deferrable=False,
    )

with recorded_dag("kling_sidecars_crash", poll_interval=0.2) as crash_dag:
    CrashBeforeSidecarOperator(
        task_id="crash_before_sidecar",
        image_url="https://images.example.org/owl.png",
        prompt="crash_before_sidecar: an owl blinks",
        download_to=VIDEOS,
    )
