"""Polling economy: GETs per generation and completion-to-success latency, through ``dag.test()``.

A DAG from ``benchmarks/dags`` (its own bundle, in a private AIRFLOW_HOME) submits one generation
that the emulator (own process) finishes after ``G`` seconds and polls it every ``P`` seconds, from the
triggerer (deferrable) or from the worker. From the emulator's records:

- the ideal GET count is one GET per poll interval from the first answered poll until the first poll
  at or after completion, plus one per 429 (whose Retry-After delays the schedule), plus, on the
  triggerer path, the resumed task's one read of the completed generation (see ``RESUME_READS``);
- the shortest gap between two polls shows a busy loop (it must be about ``P``, or the Retry-After);
  the resume read is no poll and is left out of the gaps;
- latency runs from the moment the emulator marks the generation completed to the task instance's
  end_date (target: at most ``P`` + 1 s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (
    API_KEY,
    PYTHON,
    ROOT,
    EmulatorProcess,
    Result,
    Row,
    airflow_home,
    emulator_process,
    finish,
    run_child,
)

BUNDLE = ROOT / "benchmarks" / "dags"
TARGET_LATENCY_SLACK = 1.0
#: GETs the task makes after the polls, per mode. A deferred task reads the completed generation
#: once more when it resumes: the trigger's event must not carry the signed video URL (the triggerer
#: logs events and Airflow stores them), and the task needs that URL for its XCom and its download.
#: The worker keeps the answer of its last poll and reads nothing more.
RESUME_READS = {"deferred": 1, "sync": 0}


def _configure_airflow(base_url: str) -> None:
    """Point Airflow at a private home, a SQLite DB, the benchmark DAG bundle and the emulator."""
    home = airflow_home()
    os.environ.update(
        {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(BUNDLE),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:8080/execution/",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [
                    {
                        "name": "kling_bench",
                        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                        "kwargs": {"path": str(BUNDLE)},
                    }
                ]
            ),
            "AIRFLOW_CONN_KLING_DEFAULT": json.dumps(
                {"conn_type": "kling", "host": base_url, "password": API_KEY}
            ),
        }
    )
    subprocess.run(
        [PYTHON, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )


def _run(
    emu: EmulatorProcess, dag: Any, interval: float, seconds: float, retry_after: float, resume_reads: int
) -> dict[str, Any]:
    """One dag.test() run; the emulator's view of its polls and the task's end time.

    :param resume_reads: the GETs the task is expected to make after the last poll (``RESUME_READS``).
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dr = dag.test()
    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id,
                TaskInstance.run_id == dr.run_id,
                TaskInstance.task_id == "generate",
            )
        ).one()
        state, end = str(ti.state), ti.end_date.timestamp()
    records = emu.api_requests()
    posts = [r for r in records if r["method"] == "POST"]
    gets = [r for r in records if r["method"] == "GET"]
    if len(posts) != 1 or not gets:
        raise RuntimeError(f"expected one POST and some GETs, got {len(posts)} and {len(gets)}")
    ready = posts[0]["time"] + seconds
    # The polls end with the first answered GET at or after completion; any GET after it is the
    # resumed task's read (or a poll too many: either way the count below goes over the ideal).
    last_poll = next(
        (i for i, r in enumerate(gets) if r["status"] == 200 and r["time"] >= ready), len(gets) - 1
    )
    polls, after_polls = gets[: last_poll + 1], gets[last_poll + 1 :]
    throttled = [r for r in polls if r["status"] == 429]
    answered = [r for r in polls if r["status"] == 200]
    ideal_polls = len(throttled) + math.ceil((ready - answered[0]["time"]) / interval) + 1
    gaps = []
    for before, after in itertools.pairwise(polls):
        # After a 429 the wait is the Retry-After, not the poll interval: judge it against that.
        expected = retry_after if before["status"] == 429 else interval
        gaps.append((after["time"] - before["time"]) / expected)
    return {
        "state": state,
        "gets": len(gets),
        "ideal": ideal_polls + resume_reads,
        "polls": len(polls),
        "ideal_polls": ideal_polls,
        "after_polls": len(after_polls),
        "latency": end - ready,
        "shortest_gap_ratio": min(gaps) if gaps else None,
    }


SCENARIOS = (("deferred", "triggerer", False), ("sync", "worker", False))
SCENARIOS += tuple((mode, f"{label}, one 429", True) for mode, label, _ in SCENARIOS)


def _child(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """Run every scenario through dag.test() in this process (its Airflow logs go to the child log)."""
    sys.path.insert(0, str(BUNDLE))
    import kling_bench_polling  # type: ignore[import-not-found]

    emu = EmulatorProcess(args.base_url, None)
    runs = []
    for mode, label, throttled in SCENARIOS:
        emu.reset()
        if throttled:
            emu.post("/_emulator/faults", {"kind": "429", "method": "GET", "retry_after": args.retry_after})
        dag = getattr(kling_bench_polling, f"dag_{mode}")
        resume_reads = RESUME_READS[mode]
        runs.append((label, _run(emu, dag, args.interval, args.seconds, args.retry_after, resume_reads)))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=7.0)
    parser.add_argument("--retry-after", type=float, default=3.0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        Path(args.out).write_text(json.dumps(_child(args)))
        return 0

    os.environ["BENCH_POLL_INTERVAL"] = str(args.interval)
    os.environ["BENCH_GENERATION_SECONDS"] = f"{args.seconds:g}"
    with emulator_process() as emu:
        _configure_airflow(emu.base_url)
        child_args = ["--base-url", emu.base_url, "--interval", str(args.interval)]
        child_args += ["--seconds", str(args.seconds), "--retry-after", str(args.retry_after)]
        runs = run_child("benchmarks.bench_polling", child_args, env=os.environ.copy())
    for label, data in runs:
        print(
            f"  {label}: {data['state']}, {data['gets']} GETs (ideal {data['ideal']}): "
            f"{data['polls']} polls (ideal {data['ideal_polls']}) + {data['after_polls']} after them; "
            f"success {data['latency']:.2f} s after completion",
            flush=True,
        )

    limit = args.interval + TARGET_LATENCY_SLACK
    rows = []
    for label, data in runs:
        ok = data["state"] == "success"
        rows.append(
            Row(f"{label}: GETs per generation", "", data["gets"], {"ideal": data["ideal"]}, "<= ideal",
                ok and data["gets"] <= data["ideal"])
        )  # fmt: skip
        rows.append(
            Row(f"{label}: completion -> task success", "s", data["latency"], {}, f"<= {limit:g} s",
                ok and data["latency"] <= limit)
        )  # fmt: skip
        gap = data["shortest_gap_ratio"]
        rows.append(
            Row(f"{label}: shortest poll gap / expected", "x", gap, {}, ">= 0.9x", gap is None or gap >= 0.9)
        )
    notes = [
        f"poll interval {args.interval:g} s, generation {args.seconds:g} s, "
        f"Retry-After {args.retry_after:g} s; dag.test() runs the deferred trigger inline",
        "triggerer ideal = the polls' ideal + 1: the resumed task reads the completed generation once "
        "for its signed video URL, which the trigger's event never carries; poll gaps leave that read out",
    ]
    return finish(Result("polling", "4. Polling economy in dag.test()", ["ideal"], rows, notes), args.json)


if __name__ == "__main__":
    sys.exit(main())
