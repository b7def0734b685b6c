"""DAGs for tests/integration/test_budget.py: one generation and one batch, with their caps.

Everything comes from the run's conf (``params``): the connection, ``max_usd``, ``dry_run``, and for
the batch its manifest and output prefix. Failures are recorded by ``record_failure`` (events.jsonl).
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingBatchVideoOperator, KlingImageToVideoOperator
from tests.dags.kling_common import record_failure

ARGS = {"retries": 0, "on_failure_callback": record_failure}


def _float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


with DAG(
    dag_id="kling_budget_single",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=ARGS,
) as dag:
    KlingImageToVideoOperator(
        task_id="generate",
        image_url="https://example.com/budget.png",
        prompt="a budget run [seconds:0.2]",
        kling_conn_id=os.environ.get("KLING_BUDGET_CONN", "kling_default"),
        max_usd=_float("KLING_MAX_USD"),
        dry_run=bool(os.environ.get("KLING_DRY_RUN")),
        poll_interval=0.2,
        deferrable=False,
    )


def _batch_args() -> dict[str, Any]:
    return {
        "manifest": "{{ params.manifest }}",
        "output_prefix": "{{ params.output_prefix }}",
        "kling_conn_id": os.environ.get("KLING_BUDGET_CONN", "kling_default"),
        "max_usd": _float("KLING_MAX_USD"),
        "dry_run": bool(os.environ.get("KLING_DRY_RUN")),
        "max_active": int(os.environ.get("KLING_MAX_ACTIVE", "4")),
        "poll_interval": 0.2,
        "deferrable": False,
    }


with DAG(
    dag_id="kling_budget_batch",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=ARGS,
    params={"manifest": "", "output_prefix": ""},
) as dag_batch:
    KlingBatchVideoOperator(task_id="batch", **_batch_args())
