"""DAGs for the polling-economy benchmark (benchmarks/bench_polling.py): one generation each, polled
from the triggerer (deferrable) or from the worker. The benchmark sets the environment they read."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

POLL_INTERVAL = float(os.environ.get("BENCH_POLL_INTERVAL", "2"))
GENERATION_SECONDS = os.environ.get("BENCH_GENERATION_SECONDS", "7")

for mode, deferrable in (("deferred", True), ("sync", False)):
    with DAG(
        f"kling_bench_poll_{mode}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
    ) as dag:
        KlingImageToVideoOperator(
            task_id="generate",
            image_url="https://example.com/first-frame.png",
            prompt=f"a lighthouse at dusk [seconds:{GENERATION_SECONDS}]",
            poll_interval=POLL_INTERVAL,
            deferrable=deferrable,
            retries=0,
        )
    globals()[f"dag_{mode}"] = dag
