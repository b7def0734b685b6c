"""Bad input to KlingImageToVideoOperator, one task per case (run by tests/integration/test_bad_input.py).

Templates render natively, so a Jinja expression can hand the operator an int, a list or None
where a string or number belongs. Every task must fail before anything is sent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import one_task_per_case

V16_STANDARD = "kling-video/v1.6/standard/image-to-video"
V16_PRO = "kling-video/v1.6/pro/image-to-video"
MASK = "https://example.com/mask.png"
TWO_POINTS = [{"x": 10, "y": 10}, {"x": 40, "y": 60}]


def mask(**overrides: Any) -> dict[str, Any]:
    return {"mask_url": MASK, "trajectories": TWO_POINTS, **overrides}


#: task_id -> the arguments that differ from a valid call.
CASES: dict[str, dict[str, Any]] = {
    "image_url_empty": {"image_url": "{{ '' }}"},
    "image_url_ftp": {"image_url": "{{ 'ftp://example.com/cat.png' }}"},
    "image_url_relative": {"image_url": "{{ 'images/cat.png' }}"},
    "image_url_list": {"image_url": "{{ ['https://example.com/cat.png'] }}"},
    "image_url_none": {"image_url": "{{ none }}"},
    "prompt_empty": {"prompt": "{{ '   ' }}"},
    "prompt_int": {"prompt": "{{ 42 }}"},
    "prompt_dict": {"prompt": "{{ {'text': 'a cat'} }}"},
    "duration_7": {"duration": "{{ 3 + 4 }}"},
    "duration_float": {"duration": "{{ 5.5 }}"},
    "duration_word": {"duration": "{{ 'five' }}"},
    "duration_bool": {"duration": "{{ true }}"},
    "cfg_scale_high": {"cfg_scale": "{{ 1.5 }}"},
    "cfg_scale_negative": {"cfg_scale": "{{ -0.1 }}"},
    "cfg_scale_word": {"cfg_scale": "{{ 'high' }}"},
    "cfg_scale_bool": {"cfg_scale": "{{ true }}"},
    "model_unknown": {"model": "{{ 'kling-video/v9/ultra/image-to-video' }}"},
    "model_int": {"model": "{{ 2 }}"},
    "negative_prompt_list": {"negative_prompt": "{{ ['blur', 'text'] }}"},
    "tail_on_v16_standard": {"model": V16_STANDARD, "tail_image_url": "https://example.com/end.png"},
    "static_mask_on_v16_standard": {"model": V16_STANDARD, "static_mask_url": MASK},
    "dynamic_masks_on_v16_pro": {"model": V16_PRO, "dynamic_masks": [mask()]},
    "tail_with_static_mask": {"tail_image_url": "https://example.com/end.png", "static_mask_url": MASK},
    "static_mask_relative": {"static_mask_url": "{{ 'masks/static.png' }}"},
    "dynamic_masks_string": {"dynamic_masks": "{{ 'masks/brush.png' }}"},
    "mask_one_point": {"dynamic_masks": [mask(trajectories=[{"x": 1, "y": 1}])]},
    "mask_78_points": {"dynamic_masks": [mask(trajectories=[{"x": i, "y": i} for i in range(78)])]},
    "seven_masks": {"dynamic_masks": [mask() for _ in range(7)]},
    "mask_url_file": {"dynamic_masks": [mask(mask_url="file:///etc/passwd")]},
    "mask_point_negative": {"dynamic_masks": [mask(trajectories=[{"x": -1, "y": 0}, {"x": 5, "y": 5}])]},
    "mask_point_float": {"dynamic_masks": [mask(trajectories=[{"x": 1.5, "y": 0}, {"x": 5, "y": 5}])]},
    "mask_unknown_field": {"dynamic_masks": [mask(speed=3)]},
    "poll_interval_zero": {"poll_interval": 0},
    "poll_interval_negative": {"poll_interval": -5},
    "poll_interval_a_day": {"poll_interval": 86400},
    "poll_interval_word": {"poll_interval": "fast"},
    "timeout_zero": {"timeout": 0},
    "timeout_negative": {"timeout": timedelta(minutes=-5)},
    "timeout_a_month": {"timeout": timedelta(days=30)},
    "timeout_word": {"timeout": "soon"},
    "conn_without_key": {"kling_conn_id": "kling_bad_no_key"},
    "conn_blank_key": {"kling_conn_id": "kling_bad_blank_key"},
    "conn_plain_http_remote": {"kling_conn_id": "kling_bad_plain_http"},
    "conn_ftp_host": {"kling_conn_id": "kling_bad_ftp_host"},
}

VALID: dict[str, Any] = {
    "image_url": "https://example.com/cat.png",
    "prompt": "a cat turns its head",
    "poll_interval": 0.2,
    "timeout": 60,
    "deferrable": False,
}

dag = one_task_per_case("bad_input_operator", KlingImageToVideoOperator, VALID, CASES)
