"""DAGs for the distributed deployment tests (tests/e2e/test_distributed.py).

They run on CeleryExecutor workers started by tests/support/deployment_distributed.py. Each generation's
prompt carries ``[<run_id>#<map_index>]`` (a tag the tests count POSTs by at the emulator) and
``[seconds:N]`` (how long the emulator takes to finish that generation). ``KLING_WORKER_HOSTNAME``
names the Celery worker a task runs on (it is also the task instance's hostname).
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

MARKERS = Path(os.environ.get("KLING_DEPLOY_MARKERS", "/tmp/kling-deploy-markers"))
START = pendulum.datetime(2026, 1, 1, tz="UTC")
IMAGE = "https://example.com/images/lighthouse.png"
#: The pool every generation here runs in; the tests create it with include_deferred.
POOL = "kling_distributed"


def tag(run_id: str, map_index: int) -> str:
    """The tag in the prompt of one generation: what the tests count its POSTs by."""
    return f"[{run_id}#{map_index}]"


@task
def prompts(**context: Any) -> list[str]:
    """One prompt per generation: ``params.count`` of them, each taking ``params.seconds``."""
    params, run_id = context["params"], context["run_id"]
    seconds = int(params["seconds"])
    return [
        f"a lighthouse at dusk, shot {i} [seconds:{seconds}] {tag(run_id, i)}"
        for i in range(int(params["count"]))
    ]


class PauseOnWorkerOperator(KlingImageToVideoOperator):
    """On its first try, holds its worker slot right after the paid POST, until released.

    It writes ``<markers>/<run_id>.<map_index>.submitted`` (pid, worker, generation id) once the
    POST has been answered and the id stored, then waits for ``<run_id>.<map_index>.release``. The
    worker-kill test kills the worker under some of them and releases the others. Later tries run
    like the plain operator.
    """

    def _resume_or_submit(self, context: Any, request: Any) -> Any:
        generation_id, prior = super()._resume_or_submit(context, request)
        ti = context["ti"]
        if ti.try_number == 1:
            name = f"{context['run_id']}.{ti.map_index}"
            MARKERS.mkdir(parents=True, exist_ok=True)
            info = {
                "pid": os.getpid(),
                "worker": os.environ.get("KLING_WORKER_HOSTNAME", ""),
                "generation_id": generation_id,
            }
            (MARKERS / f"{name}.submitted").write_text(json.dumps(info))
            release = MARKERS / f"{name}.release"
            deadline = time.monotonic() + 600
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        return generation_id, prior


_COMMON: dict[str, Any] = {
    "image_url": IMAGE,
    "duration": "5",
    "poll_interval": 2.0,
    "timeout": timedelta(minutes=20),
    "deferrable": True,
    "pool": POOL,
    "retries": 2,
    "retry_delay": timedelta(seconds=2),
}


def _mapped_dag(dag_id: str, count: int, seconds: int, doc_md: str) -> DAG:
    """A DAG of ``count`` mapped generations of ``seconds`` each (defaults the run's conf may change)."""
    return DAG(
        dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        max_active_tasks=400,
        params={"count": count, "seconds": seconds},
        tags=["kling", "e2e", "distributed"],
        doc_md=doc_md,
    )


with _mapped_dag(
    "distributed_kling_mapped",
    200,
    30,
    "Many mapped deferrable generations, spread over the Celery workers and the triggerers.",
) as mapped_dag:
    KlingImageToVideoOperator.partial(task_id="generate", **_COMMON).expand(prompt=prompts())

with _mapped_dag(
    "distributed_kling_worker_kill",
    6,
    20,
    "Mapped generations that hold their worker after the POST, so a test can kill the worker.",
) as worker_kill_dag:
    PauseOnWorkerOperator.partial(task_id="generate", **_COMMON).expand(prompt=prompts())
