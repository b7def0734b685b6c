"""KlingGenerationSensor on a generation that never completes in time (issue 10 #10).

The same sensor in poke mode, in deferrable mode (the trigger reports the timeout) and in deferrable
mode with no triggerer (Airflow resumes it after the deferral's own timeout): each must end with
AirflowSensorTimeout, which Airflow does not retry.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import chain

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from airflow_provider_kling.sensors.kling import KlingGenerationSensor
from tests.dags.kling_common import defer_and_time_out, recorded_dag


class NoTriggererSensor(KlingGenerationSensor):
    """Its deferral times out as when no triggerer runs (the deferral's timeout is recorded)."""

    def defer(self, *, trigger: Any, method_name: str, kwargs: Any = None, timeout: Any = None) -> None:
        defer_and_time_out(self, timeout)


GENERATION = "{{ ti.xcom_pull(task_ids='submit', key='generation_id') }}"
SENSOR = {"generation_id": GENERATION, "poke_interval": 0.2, "timeout": 2}

with recorded_dag("kling_sensor_timeout", trigger_rule="all_done") as dag:
    chain(
        # Pending for ten minutes: no sensor below sees it complete.
        KlingImageToVideoOperator(
            task_id="submit",
            image_url="https://images.example.org/dunes.jpg",
            prompt="sensor_timeout: the tide never comes [seconds:600]",
            wait_for_completion=False,
        ),
        KlingGenerationSensor(task_id="poke", mode="poke", **SENSOR),
        KlingGenerationSensor(task_id="deferrable", deferrable=True, **SENSOR),
        NoTriggererSensor(task_id="no_triggerer", deferrable=True, **SENSOR),
    )
