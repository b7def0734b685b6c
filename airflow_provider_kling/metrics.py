"""Metrics through Airflow's own Stats (StatsD / OpenTelemetry, as the deployment configures them).

Names start with ``kling.``; tags are limited to ``model`` and ``outcome`` (and ``dag`` on the spend,
so it can be attributed) so the series stay few:
``model`` is a model id of the catalog (an alias counts as the model it names), ``other`` for a model
the catalog does not know (sent with ``check_capabilities=False``), or ``unknown``. A metric that
cannot be sent never fails a task.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

log = logging.getLogger(__name__)

#: Generations paid for (one POST accepted).
SUBMITTED = "kling.generations.submitted"
#: Retries and clears that reconnected to an earlier generation instead of paying again.
REUSED = "kling.generations.reused"
#: Generations that reached a terminal state, tagged with outcome completed / failed / timeout.
FINISHED = "kling.generations.finished"
#: Seconds from submit to the terminal state (a timer), tagged with model and outcome.
SECONDS = "kling.generation.seconds"
#: Credits the service reported as used, summed per model.
CREDITS = "kling.credits_used"
#: US dollars the service billed (cost headers or ``meta.usage``), summed per DAG and model.
USD_SPENT = "kling.usd_spent"


def _stats() -> Any:
    from airflow_provider_kling.version_compat import AIRFLOW_V_3_2_PLUS

    # A Stats with incr/timing on every minor; the Task SDK's from 3.2 (module functions only from 3.3).
    if AIRFLOW_V_3_2_PLUS:
        # The Task SDK's Stats sends nothing until configured, which importing airflow.sdk.serde does
        # (from [metrics]). Airflow 3.3 imports it with airflow.sdk, 3.2 only in task processes: without
        # this, a 3.2 triggerer or any other process would drop the provider's metrics.
        import airflow.sdk.serde  # noqa: F401
        from airflow.sdk.observability.stats import Stats
    else:
        from airflow.stats import Stats
    return Stats


#: The ``model`` tag of every model outside the catalog: one series, however many names users send.
OTHER_MODEL = "other"


def model_tag(model: str | None) -> str:
    """The ``model`` tag for ``model``: its catalog id, :data:`OTHER_MODEL`, or ``unknown`` for none.

    :param model: the model id a task sent or the service reported.
    """
    if not model:
        return "unknown"
    from airflow_provider_kling.catalog import MODEL_ALIASES, MODELS

    if model in MODELS:
        return model
    return MODEL_ALIASES.get(model, OTHER_MODEL)


def _tags(model: str | None, outcome: str | None = None) -> dict[str, str]:
    tags = {"model": model_tag(model)}
    if outcome:
        tags["outcome"] = outcome
    return tags


def incr(name: str, model: str | None, outcome: str | None = None, count: int = 1) -> None:
    """Add ``count`` to counter ``name``."""
    with contextlib.suppress(Exception):
        _stats().incr(name, count, tags=_tags(model, outcome))


def timing(name: str, seconds: float, model: str | None, outcome: str | None = None) -> None:
    """Record ``seconds`` on timer ``name`` (Airflow's timers take milliseconds)."""
    from datetime import timedelta

    with contextlib.suppress(Exception):
        _stats().timing(name, timedelta(seconds=max(0.0, seconds)), tags=_tags(model, outcome))


def credits(usage: dict[str, Any], model: str | None) -> None:
    """Count the credits a generation used, when the service reported them."""
    used = usage.get("credits_used")
    if isinstance(used, (int, float)) and not isinstance(used, bool) and used > 0:
        incr(CREDITS, model, count=int(used))


def usd_spent(usage: dict[str, Any], model: str | None, dag_id: str | None) -> None:
    """Add the USD a generation was billed, tagged by DAG and model, when the service reported it.

    :param usage: the generation's usage (``usd_spent``).
    :param model: the model it was made with.
    :param dag_id: the DAG it was made for (characters a StatsD tag cannot hold are replaced).
    """
    spent = usage.get("usd_spent")
    if not isinstance(spent, (int, float)) or isinstance(spent, bool) or not spent > 0:
        return
    tags = {**_tags(model), "dag": _DAG_TAG_OUTSIDE.sub("_", dag_id or "unknown")[:100]}
    with contextlib.suppress(Exception):
        _stats().incr(USD_SPENT, float(spent), tags=tags)


_DAG_TAG_OUTSIDE = re.compile(r"[^A-Za-z0-9_.-]")


def finished(outcome: str, model: str | None, submitted_at: float | None, now: float) -> None:
    """A generation reached a terminal state: count it and time it from its submit."""
    incr(FINISHED, model, outcome)
    if submitted_at:
        timing(SECONDS, now - submitted_at, model, outcome)
