"""The plan of a DAG run, like ``terraform plan``: every Kling task rendered for the run, its request
validated against the catalog and its price estimated, and nothing sent to the generation endpoints.

:func:`plan_dag` builds the rows; :func:`format_table` prints them; a batch task's plan is
:func:`~airflow_provider_kling.cost.batch_plan.batch_plan`. The CLI is
``python -m airflow_provider_kling plan DAG_ID`` (see :mod:`airflow_provider_kling.__main__`).
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_kling.exceptions import KlingError, KlingValidationError

log = logging.getLogger(__name__)


@dataclass
class PlanRow:
    """One line of the plan: a task (or one mapped instance, or a whole batch).

    :param task: the task id (``task[2]`` for a mapped instance).
    :param model: the model asked for ("" when unknown).
    :param duration: seconds of video (None when unknown or a batch).
    :param estimated_usd: the estimate (None: unknown).
    :param note: why something is unknown, the batch's row count, or the price's source.
    :param errors: (field, message) of an invalid request: the plan then fails.
    """

    task: str
    model: str = ""
    duration: int | None = None
    estimated_usd: float | None = None
    note: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)


# ------------------------------------------------------------------------------------ a DAG's plan
def _context(dag: Any, task: Any, conf: Mapping[str, Any], logical_date: datetime) -> dict[str, Any]:
    """A template context for one task of a run (what Jinja needs; no task instance, no database)."""
    import types

    from airflow import macros

    params = copy.deepcopy(dag.params)
    for key, value in conf.items():
        params[key] = value
    resolved = params.validate() if hasattr(params, "validate") else dict(params)
    run_id = f"plan__{logical_date.isoformat()}"
    dag_run = types.SimpleNamespace(
        conf=dict(conf), run_id=run_id, logical_date=logical_date, dag_id=dag.dag_id, run_type="manual"
    )
    end = logical_date + timedelta(days=1)
    return {
        "dag": dag,
        "task": task,
        "params": resolved,
        "conf": None,
        "dag_run": dag_run,
        "run_id": run_id,
        "logical_date": logical_date,
        "ds": logical_date.strftime("%Y-%m-%d"),
        "ds_nodash": logical_date.strftime("%Y%m%d"),
        "ts": logical_date.isoformat(),
        "ts_nodash": logical_date.strftime("%Y%m%dT%H%M%S"),
        "data_interval_start": logical_date,
        "data_interval_end": end,
        "macros": macros,
        "map_index_template": None,
        "ti": None,
        "task_instance": None,
    }


def _instances(task: Any) -> tuple[list[tuple[str, Any]], str | None]:
    """The operators a task runs as: itself, or one per mapped instance over literal lists.

    :return: (task label, operator) pairs, and why a mapped task cannot be expanded (else None).
    """
    expand = getattr(task, "expand_input", None)
    if expand is None:
        return [(task.task_id, task)], None
    value = getattr(expand, "value", None)
    cls = getattr(task, "operator_class", None)
    if not isinstance(cls, type):
        return [], "a mapped task whose operator cannot be built here"
    if isinstance(value, Mapping) and all(isinstance(v, (list, tuple)) for v in value.values()):
        names = list(value)
        combos = [
            dict(zip(names, combo, strict=True)) for combo in itertools.product(*(value[n] for n in names))
        ]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, Mapping) for v in value):
        combos = [dict(v) for v in value]
    else:
        return [], "mapped over values known only at run time"
    partial = {k: v for k, v in dict(getattr(task, "partial_kwargs", {}) or {}).items() if k != "task_id"}
    out = []
    for index, kwargs in enumerate(combos):
        out.append((f"{task.task_id}[{index}]", cls(task_id=task.task_id, **{**partial, **kwargs})))
    return out, None


def _is_kling(task: Any) -> bool:
    from airflow_provider_kling.operators.base import KlingBaseVideoOperator

    cls = getattr(task, "operator_class", None) if hasattr(task, "expand_input") else type(task)
    return isinstance(cls, type) and issubclass(cls, KlingBaseVideoOperator)


def _plan_one(label: str, op: Any, context: dict[str, Any], hooks: dict[str, Any]) -> PlanRow:
    from airflow_provider_kling.cost.batch_plan import batch_plan
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.operators.batch import KlingBatchVideoOperator
    from airflow_provider_kling.schemas.request import build_request

    row = PlanRow(label)
    try:
        op.render_template_fields(context)
    except Exception as exc:  # an XCom of an upstream task, a variable: known only at run time
        row.note = f"unknown: a template cannot be rendered before the run ({type(exc).__name__}: {exc})"
        row.model = str(getattr(op, "model", "") if "{" not in str(getattr(op, "model", "")) else "")
        return row
    row.model = str(op.model)
    if op.kling_conn_id not in hooks:
        hooks[op.kling_conn_id] = KlingHook(op.kling_conn_id)
    hook = hooks[op.kling_conn_id]
    try:
        if isinstance(op, KlingBatchVideoOperator):
            try:
                plan = batch_plan(op.batch_settings(), hook, log)
            except KlingValidationError as exc:
                if any(name == "manifest" and "does not exist" in msg for name, msg in exc.errors):
                    row.note = f"unknown: {exc.errors[0][1]}"
                    return row
                raise
            except Exception as exc:  # object storage out of reach from here: known only at run time
                row.note = f"unknown: the manifest cannot be read before the run ({type(exc).__name__})"
                return row
            row.estimated_usd = plan["estimated_usd"] if not plan["unknown"] else None
            row.note = f"batch of {plan['rows']} rows" + (
                f" ({plan['unknown']} with no known price; ${plan['estimated_usd']:.4f} for the others)"
                if plan["unknown"]
                else ""
            )
            return row
        request = build_request(op.request_fields(), check_capabilities=op.check_capabilities, kind=op.kind)
    except KlingValidationError as exc:
        row.errors = list(exc.errors)
        row.note = "invalid"
        return row
    try:
        estimate = hook.estimate(request)
    except KlingError as exc:
        row.note = f"unknown: {exc}"
        return row
    # A variable price (an avatar follows its audio) has no length to show unless the request sets one.
    row.duration = estimate.seconds if estimate.usd is not None or "duration" in request.fields else None
    row.estimated_usd = estimate.usd
    row.note = f"{estimate.source} price" if estimate.usd is not None else f"unknown: {estimate.reason}"
    return row


def plan_dag(
    dag: Any, conf: Mapping[str, Any] | None = None, logical_date: datetime | None = None
) -> list[PlanRow]:
    """Every Kling task of ``dag`` for one run: rendered, validated, estimated; nothing sent.

    :param dag: the DAG (from a DagBag).
    :param conf: the run's conf (``dag_run.conf``; it also overrides the DAG's params).
    :param logical_date: the run's logical date (default: now, UTC).
    """
    conf = dict(conf or {})
    when = logical_date or datetime.now(timezone.utc)
    rows: list[PlanRow] = []
    hooks: dict[str, Any] = {}
    for task in dag.tasks:
        if not _is_kling(task):
            continue
        instances, why = _instances(task)
        if why is not None:
            rows.append(
                PlanRow(task.task_id, str(task.partial_kwargs.get("model", "")), note=f"unknown: {why}")
            )
            continue
        for label, op in instances:
            rows.append(_plan_one(label, op, _context(dag, op, conf, when), hooks))
    for hook in hooks.values():
        hook.close()
    return rows


def format_table(rows: Iterable[PlanRow]) -> str:
    """The plan as a text table with its total (unknown estimates are counted apart)."""
    rows = list(rows)
    lines = [("task", "model", "duration", "estimated USD", "note")]
    for row in rows:
        lines.append(
            (
                row.task,
                row.model or "?",
                f"{row.duration} s" if row.duration is not None else "-",
                f"{row.estimated_usd:.4f}" if row.estimated_usd is not None else "unknown",
                row.note if not row.errors else "invalid: " + "; ".join(f"{f}: {m}" for f, m in row.errors),
            )
        )
    known = [r.estimated_usd for r in rows if r.estimated_usd is not None]
    unknown = len(rows) - len(known)
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = [
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(line)).rstrip()
        for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.append("")
    out.append(
        f"Total: ${sum(known):.4f} for {len(rows)} task(s)"
        + (f", {unknown} of them unknown (not counted)" if unknown else "")
    )
    return "\n".join(out)


__all__ = ["PlanRow", "format_table", "plan_dag"]
