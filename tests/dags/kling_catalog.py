"""One task per catalog model: a valid request through the operator of the model's kind.

The models of each operator take the two endpoints in turn (:data:`ENDPOINTS`): the operators build the same
request whatever the endpoint, which only the hook shapes into the endpoint's body, and
tests/unit/test_catalog.py::test_every_model_through_the_hook sends every model to both endpoints. So
every model meets its operator and every operator both endpoints, at half the tasks of a task per
(model, endpoint) (each task costs about a second of dag.test()).

Run by tests/unit/test_catalog.py, which compares every body the emulator received with the body the
service documents (tests/support/catalog_bodies.py).
"""

from __future__ import annotations

import re

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.catalog import MODELS
from airflow_provider_kling.operators.kling import (
    KlingImageToVideoOperator,
    KlingTextToVideoOperator,
    KlingVideoOperator,
)
from tests.support.catalog_bodies import BODIES, request_fields

#: An unknown model with an unknown field, sent unchecked (check_capabilities=False).
UNKNOWN_MODEL = "klingai/video-v9-hyper-image-to-video"
UNKNOWN_FIELDS = {"image_url": "https://example.com/first.png", "hyper_mode": {"level": 3}, "duration": 42}


def task_id(model: str, endpoint: str) -> str:
    return f"{endpoint}__{re.sub(r'[^A-Za-z0-9]+', '_', model)}"


def operator_of(model: str) -> type[KlingVideoOperator]:
    """The operator a model of this kind is run with."""
    kind = MODELS[model]["kind"]
    if kind == "image-to-video":
        return KlingImageToVideoOperator
    if kind == "text-to-video":
        return KlingTextToVideoOperator
    return KlingVideoOperator


def _endpoints() -> dict[str, str]:
    taken: dict[type, int] = {}
    chosen = {}
    for model in BODIES:
        operator = operator_of(model)
        chosen[model] = ("legacy", "unified")[taken.get(operator, 0) % 2]
        taken[operator] = taken.get(operator, 0) + 1
    return chosen


#: The endpoint each model is sent to: the models of each operator take the two in turn.
ENDPOINTS = _endpoints()

with DAG(
    dag_id="kling_catalog",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args={"retries": 0},
) as dag:
    for model, endpoint in ENDPOINTS.items():
        fields = request_fields(model)
        common = {
            "task_id": task_id(model, endpoint),
            "kling_conn_id": f"kling_{endpoint}",
            "wait_for_completion": False,
            "model": model,
        }
        kind = MODELS[model]["kind"]
        if kind == "image-to-video":
            # Named arguments for the common fields, parameters for the rest.
            named = {k: fields.pop(k) for k in ("image_url", "prompt", "duration") if k in fields}
            KlingImageToVideoOperator(**common, **named, parameters=fields)
        elif kind == "text-to-video":
            named = {k: fields.pop(k) for k in ("prompt", "aspect_ratio") if k in fields}
            KlingTextToVideoOperator(**common, **named, parameters=fields)
        else:
            KlingVideoOperator(**common, parameters=fields)
    KlingVideoOperator(
        task_id="unknown_model_unchecked",
        kling_conn_id="kling_unified",
        wait_for_completion=False,
        model=UNKNOWN_MODEL,
        parameters=UNKNOWN_FIELDS,
        check_capabilities=False,
    )
