"""DAGs for the deployment tests (tests/e2e/test_*.py, tests/e2e/test_crash_safety.py).

They run in a real Airflow started by tests/support/deployment.py, which sets ``KLING_DEPLOY_OUT`` (download
folder) and ``KLING_DEPLOY_MARKERS`` (files through which a task and the test process meet). Every
prompt carries the run id, so a test counts the POSTs of its own run at the shared emulator.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from airflow_provider_kling.sensors.kling import KlingGenerationSensor
from tests.dags.kling_common import deployment_dag

OUT = os.environ.get("KLING_DEPLOY_OUT", "/tmp/kling-deploy-out")
MARKERS = Path(os.environ.get("KLING_DEPLOY_MARKERS", "/tmp/kling-deploy-markers"))
PROMPT = "a lighthouse at dusk, waves rolling in [{{ run_id }}]"
IMAGE = "https://example.com/images/lighthouse.png"


class PauseAfterSubmitOperator(KlingImageToVideoOperator):
    """On its first try, stops right after the paid POST until the test kills the process.

    It writes ``<markers>/<run_id>.submitted`` (its pid and the generation id) once the POST has
    been answered and the id stored, then waits for ``<run_id>.release``, which the crash test never
    writes: it kills the process instead. Later tries run like the plain operator.
    """

    def _resume_or_submit(self, context: Any, request: Any) -> Any:
        generation_id, prior = super()._resume_or_submit(context, request)
        ti = context["ti"]
        if ti.try_number == 1:
            run_id = context["run_id"]
            MARKERS.mkdir(parents=True, exist_ok=True)
            marker = MARKERS / f"{run_id}.submitted"
            marker.write_text(json.dumps({"pid": os.getpid(), "generation_id": generation_id}))
            release = MARKERS / f"{run_id}.release"
            deadline = time.monotonic() + 300
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        return generation_id, prior


with deployment_dag(
    "deploy_kling_deferrable",
    "A deferrable generation with a download, for the end-to-end deployment tests.",
) as deferrable_dag:
    KlingImageToVideoOperator(
        task_id="generate",
        image_url=IMAGE,
        prompt=PROMPT,
        negative_prompt="blur, text",
        duration="5",
        poll_interval=1.0,
        timeout=timedelta(minutes=10),
        deferrable=True,
        download_to=OUT + "/{{ run_id }}/",
        overwrite=True,
    )

with deployment_dag(
    "deploy_kling_killed",
    "The task process is killed after its POST; its retry must reconnect, not pay again.",
) as killed_dag:
    PauseAfterSubmitOperator(
        task_id="generate",
        image_url=IMAGE,
        prompt=PROMPT,
        poll_interval=1.0,
        timeout=timedelta(minutes=10),
        deferrable=True,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

with deployment_dag(
    "deploy_kling_secrets",
    (
        "Every code path that talks to the service once (deferrable, in the worker, sensor, refused key), "
        "so the leak test can search everything they leave behind for the API key."
    ),
) as secrets_dag:
    KlingImageToVideoOperator(
        task_id="generate",
        image_url=IMAGE,
        prompt=PROMPT,
        poll_interval=1.0,
        deferrable=True,
        download_to=OUT + "/{{ run_id }}/",
        overwrite=True,
    )
    KlingImageToVideoOperator(
        task_id="generate_in_worker",
        image_url=IMAGE,
        prompt=PROMPT + " (in the worker)",
        poll_interval=1.0,
        deferrable=False,
    )
    submit_only = KlingImageToVideoOperator(
        task_id="submit_only",
        image_url=IMAGE,
        prompt=PROMPT + " (sensor)",
        wait_for_completion=False,
    )
    submit_only >> KlingGenerationSensor(
        task_id="wait_with_sensor",
        generation_id="{{ ti.xcom_pull(task_ids='submit_only', key='generation_id') }}",
        deferrable=True,
        poke_interval=1.0,
    )
    # The connection kling_refused holds a key the service refuses (401): the failure path.
    KlingImageToVideoOperator(
        task_id="refused",
        kling_conn_id="kling_refused",
        image_url=IMAGE,
        prompt=PROMPT + " (refused)",
        poll_interval=1.0,
        deferrable=False,
    )
