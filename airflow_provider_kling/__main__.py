"""``python -m airflow_provider_kling plan DAG_ID``: what a DAG run would cost, before paying.

Loads the DAG from the DAGs folder, renders every Kling task's templates for the run, validates each
request against the catalog, estimates its price, and prints a table and the total. Nothing is sent
to the generation endpoints. Exits 1 when a request is invalid (naming the task and the field), 2
when the DAG cannot be loaded.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from datetime import datetime, timezone
from typing import Any


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_kling", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="print what a DAG run would cost; send nothing")
    plan.add_argument("dag_id", help="the DAG to plan")
    plan.add_argument("--conf", default="{}", help="the run's conf as a JSON object (overrides params)")
    plan.add_argument("--logical-date", help="the run's logical date, ISO-8601 (default: now, UTC)")
    plan.add_argument("--dag-folder", help="where the DAG files are (default: Airflow's dags_folder)")
    return parser


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    try:
        conf = json.loads(args.conf)
    except ValueError as exc:
        return _fail(f"--conf is not JSON: {exc}", 2)
    if not isinstance(conf, dict):
        return _fail("--conf must be a JSON object", 2)
    when = datetime.now(timezone.utc)
    if args.logical_date:
        try:
            when = datetime.fromisoformat(args.logical_date.replace("Z", "+00:00"))
        except ValueError:
            return _fail(f"--logical-date {args.logical_date!r} is not an ISO-8601 date", 2)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    from airflow_provider_kling.cost.plan import format_table, plan_dag

    # Airflow 2 would add its own example DAGs unless told not to; Airflow 3 has no such argument.
    extra: dict[str, Any] = (
        {"include_examples": False} if "include_examples" in inspect.signature(DagBag).parameters else {}
    )
    bag = DagBag(dag_folder=args.dag_folder, **extra)
    dag = bag.dags.get(args.dag_id)
    if dag is None:
        errors = "".join(
            f"\n  {path}: {err.strip().splitlines()[-1]}" for path, err in bag.import_errors.items()
        )
        return _fail(f"no DAG {args.dag_id!r} in {bag.dag_folder}{errors}", 2)
    rows = plan_dag(dag, conf, when)
    print(f"Plan of {args.dag_id} for a run at {when.isoformat()} (nothing is sent):\n")
    print(format_table(rows))
    invalid = [(row.task, name, message) for row in rows for name, message in row.errors]
    for task, name, message in invalid:
        print(f"error: task {task!r}: {name}: {message}", file=sys.stderr)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
