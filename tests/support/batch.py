"""Batch manifests, results files, the batch operator as its tests build it, and the 2,000-row batch of
the real deployment with its kill of a submitting try.

Shared by tests/integration/test_batch*.py, tests/unit/batch/ and tests/e2e/test_crash_safety.py.
"""

from __future__ import annotations

import json
import os
import signal
import types
from pathlib import Path
from typing import Any

#: A product image every batch row points at (the emulator does not fetch it).
IMAGE = "https://images.example.org/catalog/sku.png"
#: Rows of each batch run in the real deployment.
E2E_ROWS = 2000
#: In flight at once in the deployment: 2,000 rows in a few trigger rounds keep these runs short.
E2E_MAX_ACTIVE = 500


def manifest_rows(n: int, tag: str, seconds: float = 1.0, **extra: Any) -> list[dict[str, Any]]:
    """``n`` rows keyed ``sku-00000``...; each prompt carries ``tag`` and a ``[seconds:N]`` marker."""
    return [
        {"key": f"sku-{i:05d}", "image_url": IMAGE, "prompt": f"{tag} item {i} [seconds:{seconds}]", **extra}
        for i in range(n)
    ]


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> str:
    """Write ``rows`` as a JSON-lines manifest at ``path`` (parents made).

    :param path: where the manifest goes.
    :param rows: the manifest's rows.
    :return: the manifest's path as the operator takes it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_results(path: Path) -> list[dict[str, Any]]:
    """The lines of a batch's ``results.jsonl``, blank lines skipped."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def operator_context(
    dag_id: str, run_id: str = "run-1", try_number: int = 1, store: Any = None
) -> dict[str, Any]:
    """What the task runner hands ``execute``: the task instance and the run (and a state store).

    :param dag_id: the DAG id the task instance names.
    :param run_id: the run's id.
    :param try_number: the try being run.
    :param store: a ``task_state_store`` to offer, or ``None`` for none.
    """
    ti = types.SimpleNamespace(
        dag_id=dag_id,
        task_id="batch",
        run_id=run_id,
        map_index=-1,
        try_number=try_number,
        xcom_push=lambda **kwargs: None,
    )
    ctx: dict[str, Any] = {"ti": ti, "run_id": run_id}
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


def batch_operator(manifest: str, out: Path, **kwargs: Any) -> Any:
    """A ``KlingBatchVideoOperator`` (task ``batch``) that polls in the worker, one POST at a time.

    :param manifest: the manifest's path.
    :param out: the output prefix.
    :param kwargs: settings that replace the defaults here, or add to them.
    """
    from airflow_provider_kling.operators.kling import KlingBatchVideoOperator

    settings: dict[str, Any] = {
        "deferrable": False,
        "poll_interval": 0.2,
        "max_active": 4,
        "submit_concurrency": 1,
        "fail_on_partial_error": False,
        **kwargs,
    }
    return KlingBatchVideoOperator(task_id="batch", manifest=manifest, output_prefix=str(out), **settings)


def e2e_batch(deployment: Any, tag: str, **conf: Any) -> tuple[str, list[dict[str, Any]], Path]:
    """Trigger ``kling_batch`` in the deployment on :data:`E2E_ROWS` rows whose prompts carry ``tag``.

    :param deployment: the real deployment (tests/support/deployment.py).
    :param tag: marks the run's rows, its manifest and its output folder.
    :param conf: more run conf (it may replace the defaults here).
    :return: the run's id, its rows and its output folder.
    """
    rows = manifest_rows(E2E_ROWS, tag, seconds=2.0)
    manifest = write_manifest(deployment.home / "manifests" / f"{tag}.jsonl", rows)
    out = deployment.videos / tag
    conf = {"manifest": manifest, "output_prefix": str(out), "max_active": E2E_MAX_ACTIVE, **conf}
    run_id = deployment.trigger("kling_batch", conf=conf)
    return run_id, rows, out


def kill_first_try_while_submitting(deployment: Any, tag: str, pid_file: Path) -> None:
    """SIGKILL the batch's first try once it has sent 20 POSTs (its pid read from ``pid_file``).

    :param deployment: the real deployment.
    :param tag: the tag of the batch's rows (:func:`e2e_batch`).
    :param pid_file: where the test DAG writes ``<pid> <try_number>`` (conf ``pid_file``).
    """
    from tests.support.deployment import wait_for

    def submitting() -> int | None:
        if not pid_file.exists() or deployment.posts_for(tag) < 20:
            return None
        pid, try_number = pid_file.read_text().split()
        return int(pid) if try_number == "1" else None

    pid = wait_for("the first try to be submitting", submitting, timeout=300, interval=0.5)
    os.kill(pid, signal.SIGKILL)
