"""Batch DAGs for tests/integration/test_batch.py and the real deployment (that file's e2e tests).

Everything comes from the environment the test sets: the manifest and output prefix (local paths or
``s3://kling_s3@bucket/...``), the window and the poll interval.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, AirflowException, AirflowFailException

from airflow_provider_kling.operators.kling import KlingBatchVideoOperator


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


class MarkedBatchOperator(KlingBatchVideoOperator):
    """The batch operator, with test switches from the environment.

    - ``KLING_BATCH_PID_FILE``: write the process id and try number there on every pass (the e2e test
      kills that process);
    - ``KLING_BATCH_CRASH``: on the first try, die right after the first window was submitted (as a
      lost worker would), so the retry must reconnect to those generations;
    - ``KLING_BATCH_NO_STORE``: run without ``task_state_store`` (as on Airflow 2.11): the state then
      lives in objects under the output prefix;
    - ``KLING_BATCH_RETRY_PARTIAL``: on the first try, a partial failure is retried (as a user's clear
      would start a new try of the same task instance; ``dag.test()`` cannot clear a run).
    """

    def _context(self, context: Any) -> Any:
        if os.environ.get("KLING_BATCH_NO_STORE"):
            context = dict(context)
            context.pop("task_state_store", None)
        return context

    def execute(self, context: Any) -> Any:
        with self._partial_retried(context):
            return super().execute(self._context(context))

    def execute_complete(self, context: Any, event: Any = None, **kwargs: Any) -> Any:
        with self._partial_retried(context):
            return super().execute_complete(self._context(context), event, **kwargs)

    @contextmanager
    def _partial_retried(self, context: Any) -> Iterator[None]:
        try:
            yield
        except AirflowFailException as exc:
            if os.environ.get("KLING_BATCH_RETRY_PARTIAL") and context["ti"].try_number == 1:
                raise AirflowException(f"retried as a clear would: {exc}") from exc
            raise

    def _drive(self, context: Any, run: Any, finished: Any) -> Any:
        marker = os.environ.get("KLING_BATCH_PID_FILE") or (context.get("params") or {}).get("pid_file")
        if marker:
            Path(marker).parent.mkdir(parents=True, exist_ok=True)
            Path(marker).write_text(f"{os.getpid()} {context['ti'].try_number}\n")
        if "fail_on_partial" in (context.get("params") or {}):
            self.fail_on_partial_error = bool(context["params"]["fail_on_partial"])
        if os.environ.get("KLING_BATCH_CRASH") and context["ti"].try_number == 1:
            run.step(finished)
            raise RuntimeError("worker lost after submitting the first window")
        return super()._drive(context, run, finished)


def _batch(dag_id: str, deferrable: bool) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        default_args={"retries": int(_env("KLING_BATCH_RETRIES", "2")), "retry_delay": timedelta(seconds=0)},
        params={
            "manifest": _env("KLING_BATCH_MANIFEST", ""),
            "output_prefix": _env("KLING_BATCH_OUT", "/tmp/kling-batch"),
            "max_active": int(_env("KLING_BATCH_MAX_ACTIVE", "50")),
            "pid_file": "",
            "fail_on_partial": _env("KLING_BATCH_FAIL_ON_PARTIAL", "1") == "1",
        },
    ) as dag:
        MarkedBatchOperator(
            task_id="batch",
            manifest="{{ params.manifest }}",
            output_prefix="{{ params.output_prefix }}",
            max_active="{{ params.max_active }}",
            poll_interval=float(_env("KLING_BATCH_POLL", "0.5")),
            deferrable=deferrable,
            fail_on_partial_error=_env("KLING_BATCH_FAIL_ON_PARTIAL", "1") == "1",
            submit_concurrency=int(_env("KLING_BATCH_SUBMIT_CONCURRENCY", "8")),
            download_concurrency=int(_env("KLING_BATCH_DOWNLOAD_CONCURRENCY", "8")),
            timeout=float(_env("KLING_BATCH_TIMEOUT", "1800")),
            resend_unknown=_env("KLING_BATCH_RESEND_UNKNOWN", "0") == "1",
        )
    return dag


dag = _batch("kling_batch", deferrable=True)
dag_polling = _batch("kling_batch_polling", deferrable=False)


# The same rows as dynamically mapped single tasks (benchmarks/bench_batch.py compares the two).
with DAG(
    dag_id="kling_batch_mapped",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"manifest": "", "output_prefix": "/tmp/kling-batch-mapped"},
    max_active_tasks=1024,
) as dag_mapped:
    from airflow.providers.common.compat.sdk import task

    from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

    @task
    def manifest_rows(**context: Any) -> list[dict[str, Any]]:
        import json

        text = Path(context["params"]["manifest"]).read_text()
        return [
            {"image_url": row["image_url"], "prompt": row["prompt"]}
            for row in map(json.loads, text.splitlines())
            if row
        ]

    KlingImageToVideoOperator.partial(
        task_id="generate",
        download_to="{{ params.output_prefix }}/",
        deferrable=True,
        poll_interval=float(_env("KLING_BATCH_POLL", "1")),
        retries=2,
        retry_delay=timedelta(seconds=0),
    ).expand_kwargs(manifest_rows())
