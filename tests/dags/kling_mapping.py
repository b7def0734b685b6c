"""The operator under dynamic task mapping and fed by TaskFlow tasks' XComArgs."""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir

IMAGES = [
    "https://images.example.org/forest.jpg",
    "https://images.example.org/river.png",
    "https://images.example.org/mountain.jpeg",
]

with DAG(
    dag_id="kling_mapping",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args={"poll_interval": 0.2},
) as dag:

    @task
    def image_urls() -> list[str]:
        return IMAGES

    @task
    def pick_image() -> str:
        return IMAGES[1]

    @task
    def write_prompt() -> str:
        return "mapping: sunlight flickers through the leaves"

    KlingImageToVideoOperator.partial(
        task_id="by_url",
        prompt="mapping: {{ task.image_url.rsplit('/', 1)[-1] }} comes alive",
        download_to=os.path.join(out_dir(), "mapped") + "/",
    ).expand(image_url=image_urls())

    KlingImageToVideoOperator(
        task_id="from_taskflow",
        image_url=pick_image(),
        prompt=write_prompt(),
        deferrable=True,
        download_to=os.path.join(out_dir(), "taskflow") + "/",
    )
