"""The record a single-generation task keeps in ``task_state_store`` (Airflow 3.3+), and reading it back.

Right after the paid POST the task records the generation id, the request's fingerprint, the endpoint
and when it was submitted; a retry of the same task reads it and reconnects to that generation instead
of paying for a new one, unless the request changed, the service no longer knows the id, or the
generation failed. Light on purpose: :mod:`~airflow_provider_kling.operators.base` imports it at DAG
parse; the hook, the metrics and the schemas load when a task runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.schemas.generation import Generation

#: task_state_store key holding the generation id (and the request's hash) across retries of one task.
GENERATION_ID_STATE_KEY = "kling_generation_id"

_warned_no_state_store = False


def record_submission(
    store: Any, generation_id: str, fingerprint: str, api: str, submitted_at: float
) -> None:
    """Record a paid generation in ``task_state_store`` (a no-op where Airflow has none).

    :param store: the task's ``task_state_store``, or None.
    :param generation_id: the generation just paid for.
    :param fingerprint: the request's fingerprint (stable identities, never a signed URL).
    :param api: the endpoint it was sent to.
    :param submitted_at: epoch seconds of the POST.
    """
    if store is not None:
        store.set(
            GENERATION_ID_STATE_KEY,
            {"id": generation_id, "request": fingerprint, "api": api, "submitted_at": submitted_at},
        )


def earlier_generation(
    store: Any, fingerprint: str, hook: KlingHook, model: str, log: Any
) -> tuple[str, Generation, float | None] | None:
    """The generation an earlier try of this task paid for with the same request, if it can be reused.

    :param store: the task's ``task_state_store``, or None (before Airflow 3.3: warned once).
    :param fingerprint: this try's request fingerprint.
    :param hook: the hook that reads the generation.
    :param model: the request's model (the reuse metric's tag).
    :param log: the task's logger.
    :return: (id, generation, epoch of its submit when recorded), or None to submit anew.

    Not Airflow 3.3's ``ResumableJobMixin``: it gives weaker guarantees here. A failed
    ``task_state_store.set`` after its submit is a plain retryable error (the retry pays again), it
    reconnects without comparing the request (a cleared task with an edited prompt would get the old
    video), and it covers the synchronous poll only, not the deferrable path.
    """
    from airflow_provider_kling.exceptions import KlingNotFoundError
    from airflow_provider_kling.schemas.generation import GenerationStatus

    global _warned_no_state_store
    if store is None:
        if not _warned_no_state_store:
            log.warning(
                "This Airflow has no task_state_store (it arrived in 3.3): a retry of this task "
                "cannot find its earlier generation and may submit, and pay for, a new one"
            )
            _warned_no_state_store = True
        return None
    stored = store.get(GENERATION_ID_STATE_KEY)
    if not stored:
        return None
    stored_id, stored_hash, stored_api = _read_state(stored)
    if stored_hash not in (None, fingerprint):
        log.info(
            "The request changed since Kling generation %s was submitted (e.g. an edited prompt): "
            "submitting a new generation",
            stored_id,
        )
        return None
    try:
        prior = hook.get_generation(stored_id, api=stored_api)
    except KlingNotFoundError:
        log.warning("Earlier Kling generation %s is unknown to the service; submitting anew", stored_id)
        return None
    if prior.status is GenerationStatus.FAILED:
        log.warning(
            "Earlier Kling generation %s ended in error (%s); submitting anew", stored_id, prior.error
        )
        return None
    from airflow_provider_kling import metrics

    metrics.incr(metrics.REUSED, model)
    when = stored.get("submitted_at") if isinstance(stored, dict) else None
    log.info(
        "Reconnecting to Kling generation %s (%s) from an earlier try, not submitting again",
        stored_id,
        prior.raw_status,
    )
    return stored_id, prior, float(when) if isinstance(when, (int, float)) else None


def _read_state(stored: Any) -> tuple[str, str | None, str | None]:
    """(id, request hash, endpoint) from a task_state_store value (the first release stored the id alone)."""
    if isinstance(stored, dict):
        return str(stored.get("id")), stored.get("request"), stored.get("api")
    return str(stored), None, None
