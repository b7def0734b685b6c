"""KlingGenerationSensor in poke and deferrable mode, on good and errored generations.

The tasks run one after another (each whatever the previous one's end), so each sensor starts
right after its submit; the test ends each generation right after the first poll of it was answered
(tests/support/polls.py), so every sensor's first poll finds its generation pending.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import chain

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from airflow_provider_kling.sensors.kling import KlingGenerationSensor
from tests.dags.kling_common import recorded_dag

IMAGE = "https://images.example.org/desert.jpg"

with recorded_dag("kling_sensor_modes", trigger_rule="all_done") as dag:
    tasks: list[Any] = []
    for name, prompt in (
        ("poke", "sensor poke: dunes shift in the wind"),
        ("deferred", "sensor deferred: a caravan crosses the dunes"),
        ("poke_error", "sensor poke_error: [error]"),
        ("deferred_error", "sensor deferred_error: [error:2026]"),
    ):
        submit = KlingImageToVideoOperator(
            task_id=f"submit_{name}", image_url=IMAGE, prompt=prompt, wait_for_completion=False
        )
        sensor = KlingGenerationSensor(
            task_id=f"wait_{name}",
            generation_id="{{ ti.xcom_pull(task_ids='" + submit.task_id + "', key='generation_id') }}",
            deferrable=name.startswith("deferred"),
            mode="poke",
            poke_interval=0.2,
            timeout=60,
        )
        tasks += [submit, sensor]
    tasks.append(
        KlingGenerationSensor(task_id="wait_invalid_id", generation_id="not an id!", poke_interval=0.2)
    )
    chain(*tasks)
