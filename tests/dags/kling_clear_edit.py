"""A task cleared after its prompt was edited (issue 10 #7).

The test runs this DAG, edits the prompt (``KLING_TEST_PROMPT``, read at parse time as an edited DAG
file would be), clears both tasks of the same run and runs them again: task_state_store still holds
each task's generation id. The edited request must be a new generation; the unchanged one reconnects.
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

IMAGE = "https://images.example.org/orchard.jpg"

with DAG(
    dag_id="kling_clear_edit",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args={"retries": 0, "poll_interval": 0.2},
) as dag:
    KlingImageToVideoOperator(
        task_id="edited",
        image_url=IMAGE,
        prompt="edited: " + os.environ.get("KLING_TEST_PROMPT", "apples ripen in the sun"),
    )
    KlingImageToVideoOperator(
        task_id="unchanged", image_url=IMAGE, prompt="unchanged: leaves turn gold in the orchard"
    )
