"""One task per failure kind, run in a fixed order (each after the previous, whatever its end).

The test queues emulator faults in the same order: the first POST gets 403, the next six 429
(one more than the hook's attempts), and the first six polls 503.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG, chain

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import recorded_retries

IMAGE = "https://images.example.org/meadow.jpg"

with DAG(
    dag_id="kling_failures",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=recorded_retries(trigger_rule="all_done", poll_interval=0.2),
) as dag:
    chain(
        # 403 on the POST: no credits. Fails at once, no retry.
        KlingImageToVideoOperator(
            task_id="forbidden", image_url=IMAGE, prompt="forbidden: wind in the grass"
        ),
        # 429 more times than the hook retries: an ordinary failure, then Airflow's retry succeeds.
        # It does not wait, so the polls' faults are left for poll_outage.
        KlingImageToVideoOperator(
            task_id="rate_limited",
            image_url=IMAGE,
            prompt="rate_limited: bees over the flowers",
            wait_for_completion=False,
        ),
        # A refused key: no retry.
        KlingImageToVideoOperator(
            task_id="unauthorized",
            image_url=IMAGE,
            prompt="unauthorized: clouds over the meadow",
            kling_conn_id="kling_bad_key",
        ),
        # Invalid after rendering: no retry and nothing sent.
        KlingImageToVideoOperator(
            task_id="invalid",
            image_url="ftp://images.example.org/meadow.jpg",
            prompt="invalid: {{ 'rain' }}",
            duration="{{ 3 + 4 }}",
        ),
        # Polls fail with 503 past the hook's attempts: an ordinary failure naming the generation;
        # the retry reconnects to it.
        KlingImageToVideoOperator(
            task_id="poll_outage", image_url=IMAGE, prompt="poll_outage: a fox crosses the field"
        ),
        # The service ends the generation in error: no retry, in both waiting modes.
        KlingImageToVideoOperator(
            task_id="errored", image_url=IMAGE, prompt="errored: [error] a face in the crowd"
        ),
        KlingImageToVideoOperator(
            task_id="errored_deferred",
            image_url=IMAGE,
            prompt="errored_deferred: [error:2026] a banned scene",
            deferrable=True,
        ),
    )
