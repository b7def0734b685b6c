"""Bad input to KlingGenerationSensor, one task per case (run by tests/integration/test_bad_input.py).

Templates render natively, so an id can arrive as None, an int or a list. Every task must fail
before anything is sent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_provider_kling.sensors.kling import KlingGenerationSensor
from tests.dags.kling_common import one_task_per_case

GOOD_ID = "3f2a9c1e-5d4b-4c1a-9e8f-0b1c2d3e4f50:kling-video/v1/standard/image-to-video"

#: task_id -> the arguments that differ from a valid call.
CASES: dict[str, dict[str, Any]] = {
    "id_empty": {"generation_id": "{{ '' }}"},
    "id_none": {"generation_id": "{{ none }}"},
    "id_int": {"generation_id": "{{ 12345 }}"},
    "id_list": {"generation_id": "{{ ['gen_1', 'gen_2'] }}"},
    "id_with_space": {"generation_id": "{{ 'gen 1' }}"},
    "id_newline": {"generation_id": "{{ 'gen_1\nX-Injected: 1' }}"},
    "id_too_long": {"generation_id": "{{ 'a' * 300 }}"},
    "poke_interval_zero": {"poke_interval": 0, "deferrable": True},
    "poke_interval_a_week": {"poke_interval": 7 * 86400, "deferrable": True},
    "timeout_zero": {"timeout": 0},
    "timeout_a_month": {"timeout": timedelta(days=30).total_seconds()},
    "conn_without_key": {"kling_conn_id": "kling_bad_no_key"},
    "conn_plain_http_remote": {"kling_conn_id": "kling_bad_plain_http"},
}

VALID: dict[str, Any] = {"generation_id": GOOD_ID, "poke_interval": 0.1, "timeout": 30, "deferrable": False}

dag = one_task_per_case("bad_input_sensor", KlingGenerationSensor, VALID, CASES)
