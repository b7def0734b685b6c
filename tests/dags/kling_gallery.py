"""DAGs for the gallery tests (tests/e2e/test_gallery.py), in the deployment of tests/support/deployment.py.

``kling_gallery`` makes three videos from three prompts with two models, downloaded under
``KLING_DEPLOY_OUT``; ``kling_gallery_private`` makes one more, in a DAG that the test auth manager
(tests/support/auth_manager.py) hides from the viewer user. Prompts carry the run id, so a test finds its own.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from tests.dags.kling_common import deployment_dag

OUT = os.environ.get("KLING_DEPLOY_OUT", "/tmp/kling-deploy-out")
STANDARD = "kling-video/v1.6/standard/text-to-video"
TURBO = "klingai/v2.5-turbo/pro/text-to-video"
#: task id -> (model, prompt); the prompts are what the gallery screenshot shows.
SHOTS = {
    "lighthouse": (STANDARD, "A lighthouse on a cliff at dusk, waves crashing below"),
    "fox": (STANDARD, "A red fox trotting through fresh snow in a birch forest"),
    "city": (TURBO, "Neon city street in the rain at night, slow dolly forward"),
}


def _generate(task_id: str, model: str, prompt: str) -> KlingTextToVideoOperator:
    return KlingTextToVideoOperator(
        task_id=task_id,
        model=model,
        prompt=prompt + " [{{ run_id }}]",
        duration=5,
        poll_interval=1.0,
        timeout=timedelta(minutes=10),
        deferrable=True,
        download_to=OUT + "/gallery/{{ run_id }}/",
        overwrite=True,
    )


with deployment_dag(
    "kling_gallery",
    "Three videos with different prompts and two models, for the gallery page.",
) as gallery_dag:
    for task_id, (model, prompt) in SHOTS.items():
        _generate(task_id, model, prompt)

with deployment_dag(
    "kling_gallery_private",
    "One video in a DAG the viewer user may not read (tests/support/auth_manager.py).",
) as private_dag:
    _generate("secret", STANDARD, "A private storyboard nobody else may see")
