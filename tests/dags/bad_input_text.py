"""Bad input through Airflow's default (text) template rendering (run by tests/integration/test_bad_input.py).

Every template renders to a string here, so numbers and lists arrive as text. Every task must
fail before anything is sent.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from airflow_provider_kling.sensors.kling import KlingGenerationSensor
from tests.dags.bad_input_operator import VALID
from tests.dags.kling_common import BAD_INPUT_RECORDED

PARAMS: dict[str, Any] = {
    "scale": 1.5,
    "seconds": 7,
    "masks": [
        {"mask_url": "https://example.com/mask.png", "trajectories": [{"x": 1, "y": 1}, {"x": 2, "y": 2}]}
    ],
}

with DAG(
    "bad_input_text",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1),
    params=PARAMS,
    default_args=BAD_INPUT_RECORDED,
) as dag:
    KlingImageToVideoOperator(task_id="text_cfg_scale", **{**VALID, "cfg_scale": "{{ params.scale }}"})
    KlingImageToVideoOperator(task_id="text_duration", **{**VALID, "duration": "{{ params.seconds }}"})
    KlingImageToVideoOperator(
        task_id="text_dynamic_masks", **{**VALID, "dynamic_masks": "{{ params.masks }}"}
    )
    KlingImageToVideoOperator(
        task_id="text_image_url_undefined",
        **{**VALID, "image_url": "{{ var.value.get('kling_image_url', '') }}"},
    )
    KlingGenerationSensor(
        task_id="text_id_from_missing_xcom",
        generation_id="{{ ti.xcom_pull(task_ids='text_cfg_scale', key='no_such_key') }}",
        poke_interval=0.1,
        timeout=30,
    )
    KlingGenerationSensor(
        task_id="text_id_with_date", generation_id="gen {{ ds }}", poke_interval=0.1, timeout=30
    )
