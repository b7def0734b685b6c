"""One batch task's plan: its rows validated and estimated, nothing sent (``dry_run=True`` on a batch,
and a batch's line in ``python -m airflow_provider_kling plan``). Never imports the operators."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.exceptions import KlingValidationError

if TYPE_CHECKING:
    from airflow_provider_kling.batch.run import BatchSettings
    from airflow_provider_kling.hooks.kling import KlingHook

log = logging.getLogger(__name__)


def batch_plan(settings: BatchSettings, hook: KlingHook, task_log: Any = log) -> dict[str, Any]:
    """One batch task's plan: its rows validated and estimated (files not read), nothing sent.

    :param settings: the batch task's rendered arguments.
    :param hook: the hook prices come from.
    :param task_log: where the estimate is logged.
    :return: ``dry_run``, ``rows``, ``estimated_usd``, ``unknown`` (rows with no price), ``models``
        (model -> rows and USD) and ``max_usd``.
    :raises KlingValidationError: a row is invalid (the report names each).
    """
    from airflow_provider_kling.batch.manifest import (
        manifest_folder,
        read_manifest,
        validate_rows,
        validation_report,
    )
    from airflow_provider_kling.cost.budget import BatchBudget
    from airflow_provider_kling.cost.estimate import by_model, total

    raw = read_manifest(settings.manifest, settings.key_field)
    try:
        rows = validate_rows(
            raw,
            model=settings.model,
            parameters=settings.parameters,
            key_field=settings.key_field,
            check_capabilities=settings.check_capabilities,
            probe_files=False,
            # Relative media paths are read against the manifest's folder, as the real run reads them.
            base=manifest_folder(settings.manifest),
        )
    except KlingValidationError as exc:
        raise KlingValidationError([("manifest", validation_report(exc, len(raw)))]) from None
    budget = BatchBudget(hook, rows, None, task_log, announce=True)
    estimates = list(budget.estimates.values())
    usd, unknown = total(estimates)
    over = settings.max_usd is not None and usd > settings.max_usd
    return {
        "dry_run": True,
        "rows": len(rows),
        "estimated_usd": usd,
        "unknown": unknown,
        "models": {
            m: {"rows": n, "estimated_usd": u, "unknown": k} for m, (n, u, k) in by_model(estimates).items()
        },
        "max_usd": settings.max_usd,
        "over_max_usd": over,
    }


__all__ = ["batch_plan"]
