"""One batch task vs dynamically mapped tasks: N generations on the same real Airflow deployment.

A deployment from ``tests/support/deployment.py`` (api-server, scheduler with LocalExecutor, dag-processor,
triggerer, SQLite) and the emulator run once; the two DAGs of ``tests/dags/kling_batch.py`` then run one
after the other on it over the same N manifest rows (generations of a few seconds, each video
downloaded to a local folder):

- ``batch``: ``kling_batch``, one ``KlingBatchVideoOperator`` task (deferrable, ``max_active`` = N);
- ``mapped``: ``kling_batch_mapped``, one ``KlingImageToVideoOperator`` mapped over the rows
  (deferrable: every generation in flight at once, as in the batch).

Per variant: wall time from the trigger to the run's end; CPU seconds of the scheduler, of the task
processes (the LocalExecutor's workers and their children), of the triggerer and of the api-server
(every task process talks to the metadata DB through it); and the rows the run added to the metadata DB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Result, Row, finish

sys.path.insert(0, str(ROOT))

MODEL = "kling-video/v1/standard/image-to-video"


def _tree_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of the process itself, CPU seconds of all its descendants), reaped children included."""
    import psutil

    try:
        proc = psutil.Process(pid)
        own = proc.cpu_times()
        kids = proc.children(recursive=True)
    except psutil.Error:
        return 0.0, 0.0
    total_kids = own.children_user + own.children_system
    for kid in kids:
        try:
            t = kid.cpu_times()
        except psutil.Error:
            continue
        # A live worker's own time, and that of the task processes it has reaped.
        total_kids += t.user + t.system + t.children_user + t.children_system
    return own.user + own.system, total_kids


def _cpu(dep: Any) -> dict[str, float]:
    out = {}
    for name in ("scheduler", "triggerer", "api-server", "dag-processor"):
        proc = dep.procs.get(name)
        if proc is None:
            continue
        own, kids = _tree_cpu(proc.pid)
        if name == "scheduler":
            out["scheduler"] = own
            out["workers"] = kids  # LocalExecutor workers and the task processes they run
        else:
            out[name] = own + kids
    return out


#: The tables a DAG run writes to (DAG parsing's own tables, rewritten by the dag-processor meanwhile,
#: are left out). Trigger rows are deleted when their task resumes: they count only while alive.
RUN_TABLES = (
    "dag_run",
    "task_instance",
    "task_instance_history",
    "task_map",
    "task_reschedule",
    "rendered_task_instance_fields",
    "xcom",
    "log",
    "trigger",
    "job",
    "task_state_store",
    "deadline",
    "callback_request",
)


def _db_rows(dep: Any) -> dict[str, int]:
    with sqlite3.connect(f"file:{dep.home}/airflow.db?mode=ro", uri=True, timeout=30) as db:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
        return {
            t: int(db.execute(f'select count(*) from "{t}"').fetchone()[0]) for t in RUN_TABLES if t in tables
        }


def _run(dep: Any, dag_id: str, manifest: Path, out: Path, n: int, tag: str) -> dict[str, Any]:
    cpu_before = _cpu(dep)
    rows_before = _db_rows(dep)
    started = time.monotonic()
    conf: dict[str, Any] = {"manifest": str(manifest), "output_prefix": str(out)}
    if dag_id == "kling_batch":
        conf["max_active"] = n
    run_id = dep.trigger(dag_id, conf=conf)
    state = dep.wait_run(dag_id, run_id, timeout=7200)
    wall = time.monotonic() - started
    cpu_after = _cpu(dep)
    rows_after = _db_rows(dep)
    added = {t: rows_after.get(t, 0) - rows_before.get(t, 0) for t in rows_after}
    videos = len(list(out.glob("*.mp4")))
    return {
        "state": state,
        "wall": wall,
        "cpu": {k: cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_after},
        "rows": sum(v for v in added.values() if v > 0),
        "rows_by_table": {t: v for t, v in sorted(added.items()) if v},
        "videos": videos,
        "posts": dep.posts_for(tag),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_BATCH_N", "1000")))
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each generation takes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from tests.support.deployment import Deployment

    home = Path(tempfile.mkdtemp(prefix="kling-bench-batch-"))
    dep = Deployment(home)
    measured: dict[str, dict[str, Any]] = {}
    try:
        dep.start(dag_ids=("kling_batch", "kling_batch_mapped"))
        for variant, dag_id in (("batch", "kling_batch"), ("mapped", "kling_batch_mapped")):
            tag = f"bench-{variant}"
            rows = [
                {
                    "key": f"{variant}-{i:05d}",
                    "image_url": "https://images.example.org/catalog/sku.png",
                    "prompt": f"{tag} item {i} [seconds:{args.seconds:g}]",
                }
                for i in range(args.n)
            ]
            manifest = home / f"{variant}.jsonl"
            manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
            data = _run(dep, dag_id, manifest, home / "out" / variant, args.n, tag)
            measured[variant] = data
            cpu = data["cpu"]
            print(
                f"  {variant}: {data['state']} in {data['wall']:.0f} s; {data['videos']} videos, "
                f"{data['posts']} POSTs; CPU s {json.dumps({k: round(v, 1) for k, v in cpu.items()})}; "
                f"{data['rows']} DB rows {data['rows_by_table']}",
                flush=True,
            )
    finally:
        dep.stop()
        shutil.rmtree(home, ignore_errors=True)
    return finish(_result(measured, args), args.json)


def _result(measured: dict[str, dict[str, Any]], args: argparse.Namespace) -> Result:
    batch, mapped = measured.get("batch"), measured.get("mapped")
    n = args.n

    def pair(key: Any) -> tuple[float | None, dict[str, float | None]]:
        return (key(batch) if batch else None), {"mapped tasks": key(mapped) if mapped else None}

    def cpu(name: str) -> Any:
        return pair(lambda d: d["cpu"].get(name, 0.0))

    wall = pair(lambda d: d["wall"])
    total = pair(lambda d: sum(d["cpu"].values()))
    rows_db = pair(lambda d: d["rows"])
    videos = pair(lambda d: d["videos"])
    posts = pair(lambda d: d["posts"])
    ok = batch is not None and batch["videos"] == n and batch["posts"] == n and batch["state"] == "success"
    rows = [
        Row("videos stored", "", videos[0], videos[1], f"= {n}", ok if batch else None, show_ratio=False),
        Row("POSTs (paid generations)", "", posts[0], posts[1], f"= {n}", ok if batch else None,
            show_ratio=False),
        Row("wall time, trigger to run end", "s", wall[0], wall[1]),
        Row("CPU: scheduler", "s", *cpu("scheduler")),
        Row("CPU: workers (task processes)", "s", *cpu("workers")),
        Row("CPU: triggerer", "s", *cpu("triggerer")),
        Row("CPU: api-server (execution API)", "s", *cpu("api-server")),
        Row("CPU: all components", "s", total[0], total[1], "< mapped tasks",
            None if not (batch and mapped) else total[0] < total[1]["mapped tasks"]),  # type: ignore[operator]
        Row("metadata-DB rows added", "", rows_db[0], rows_db[1], "< mapped tasks",
            None if not (batch and mapped) else rows_db[0] < rows_db[1]["mapped tasks"]),  # type: ignore[operator]
    ]  # fmt: skip
    notes = [
        f"{n} rows, generations of {args.seconds:g} s, each video downloaded to a local folder; one "
        "deployment (LocalExecutor, parallelism 4, SQLite), the batch first, then the mapped tasks",
        "batch: one KlingBatchVideoOperator task, deferrable, max_active = N (every generation in flight, "
        "as with the mapped tasks); mapped: KlingImageToVideoOperator.partial(...).expand_kwargs(rows)",
    ]
    for variant, data in measured.items():
        top = sorted(data["rows_by_table"].items(), key=lambda kv: -kv[1])[:6]
        notes.append(f"{variant} DB rows by table: " + ", ".join(f"{t} {v}" for t, v in top))
    return Result(
        "batch", f"5. One batch task vs {n} mapped tasks on one deployment", ["mapped tasks"], rows, notes
    )


if __name__ == "__main__":
    sys.exit(main())
