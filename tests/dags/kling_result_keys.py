"""Every task that reports a generation, for the one XCom shape (issue 11 #5)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests
from airflow.providers.common.compat.sdk import chain

from airflow_provider_kling.operators.kling import (
    KlingImageToVideoOperator,
    KlingTextToVideoOperator,
    KlingVideoOperator,
)
from airflow_provider_kling.sensors.kling import KlingGenerationSensor
from tests.dags.kling_common import recorded_dag

IMAGE = "https://images.example.org/canyon.jpg"


def generation_of(task_id: str) -> str:
    return "{{ ti.xcom_pull(task_ids='" + task_id + "', key='generation_id') }}"


class CompleteOnDeferSensor(KlingGenerationSensor):
    """Finishes its (long) generation through the emulator's control API as it defers."""

    def defer(self, **kwargs: Any) -> None:
        control = f"{self.hook.endpoint.base_url}/_emulator/generations/{quote(self.generation_id)}/complete"
        requests.post(control, timeout=10).raise_for_status()
        super().defer(**kwargs)


with recorded_dag("kling_result_keys", poll_interval=0.2) as dag:
    chain(
        KlingImageToVideoOperator(task_id="image_waiting", image_url=IMAGE, prompt="keys: a canyon at dawn"),
        KlingImageToVideoOperator(
            task_id="image_submit_only",
            image_url=IMAGE,
            prompt="keys: a canyon at noon [seconds:600]",
            wait_for_completion=False,
        ),
        KlingTextToVideoOperator(task_id="text", prompt="keys: a canyon at dusk", duration=5),
        KlingVideoOperator(
            task_id="generic",
            model="kling-video/v1/standard/image-to-video",
            prompt="keys: a canyon at night",
            parameters={"image_url": IMAGE},
        ),
        KlingGenerationSensor(
            task_id="sensor_poke", generation_id=generation_of("image_waiting"), poke_interval=0.2, timeout=60
        ),
        # Pending until it defers: its result comes from the trigger's event.
        CompleteOnDeferSensor(
            task_id="sensor_deferrable",
            generation_id=generation_of("image_submit_only"),
            poke_interval=0.2,
            timeout=60,
            deferrable=True,
        ),
    )
