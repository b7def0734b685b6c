"""Kling-shaped results whose ``video_path`` and ``video_url`` a task chose: what the gallery must not trust.

``dag_run.conf["results"]`` lists the results; one mapped task returns each, as any DAG author's task
could. tests/unit/plugins/test_streaming.py points them at files inside and outside the streaming roots.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

with DAG(
    dag_id="kling_gallery_hostile",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "test"],
) as dag:

    @task
    def results(**context: Any) -> list[dict[str, Any]]:
        return list(context["dag_run"].conf.get("results") or [])

    @task
    def report(result: dict[str, Any]) -> dict[str, Any]:
        return result

    report.expand(result=results())
