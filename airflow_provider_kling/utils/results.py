"""What a Kling task returns or raises: the XCom result dict, trigger events turned into generations
or errors, usage described for people, outlet annotations, the "no retry can fix it" rule
(:func:`fail_fast`) and the task timeout read as seconds (:func:`timeout_seconds`).

Shared by the operators and the sensor (imported at every DAG parse): only Airflow's own compat
layer loads here; the hook, the triggers and the exceptions load when a function runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.schemas.generation import Generation

#: The keys of the dict every Kling task returns as XCom (operators and sensor alike).
RESULT_KEYS = (
    "generation_id",
    "status",
    "raw_status",
    "model",
    "endpoint",
    "prompt",
    "duration",
    "video_url",
    "video_urls",
    "video_path",
    "file_name",
    "file_size",
    "usage",
    "estimated_usd",
    "reused",
    "client_request_id",
    "usd_spent",
)
#: Credits per US dollar as observed in the service's answers (not a promise of the service).
CREDITS_PER_USD = 2_000_000


def timeout_seconds(value: Any, field: str = "timeout") -> float:
    """Seconds from a timedelta / pendulum Duration or a number; KlingValidationError otherwise.

    :param value: the task's ``timeout`` argument.
    :param field: the argument's name, for the error.
    """
    from airflow_provider_kling.utils.validation import check_poll_settings

    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    try:
        check_poll_settings(1.0, seconds)
    except Exception as exc:
        from airflow_provider_kling.exceptions import KlingValidationError

        raise KlingValidationError(
            [(field, f"must be a timedelta or seconds above 0 and at most 7 days, got {value!r}")]
        ) from exc
    return float(seconds)


def fail_fast(exc: Exception, generation_id: str | None = None) -> Exception:
    """Errors no retry can fix (bad input, refused key, the service's own verdict) skip Airflow retries.

    :param exc: the error raised.
    :param generation_id: the generation concerned, when one exists: the message then names it.
    """
    from airflow_provider_kling.exceptions import (
        KlingAuthError,
        KlingBadRequestError,
        KlingBudgetError,
        KlingConfigError,
        KlingError,
        KlingForbiddenError,
        KlingGenerationFailed,
    )

    final = (
        KlingBudgetError,
        KlingConfigError,
        KlingAuthError,
        KlingForbiddenError,
        KlingBadRequestError,
        KlingGenerationFailed,
    )
    message = str(exc)
    named = generation_id is None or generation_id in message
    if isinstance(exc, final):
        return AirflowFailException(message if named else f"Kling generation {generation_id}: {message}")
    if named or isinstance(exc, AirflowFailException):
        return exc
    # Transient: a plain KlingError keeps Airflow's retries and names the generation to look up.
    return KlingError(f"Kling generation {generation_id}: {message}")


def result_dict(
    generation: Generation,
    model: str | None,
    video_path: str | None = None,
    *,
    endpoint: str | None = None,
    usage: dict[str, Any] | None = None,
    prompt: str | None = None,
    duration: float | None = None,
    reused: bool = False,
    client_request_id: str | None = None,
    estimated_usd: float | None = None,
) -> dict[str, Any]:
    """The small JSON-safe dict every Kling task returns as XCom (keys: :data:`RESULT_KEYS`).

    ``prompt`` and ``duration`` are what was asked (the first shot's prompt for multi-shot requests);
    the video's own duration wins when the service reports it. ``reused`` is True when the video was
    already at the destination from the same request (``skip_existing``): nothing was paid.

    :param generation: the generation to report.
    :param model: the model asked for (default: read from ``<uuid>:<model>`` ids).
    :param video_path: where the video was downloaded, if it was.
    :param endpoint: the endpoint (``legacy`` / ``unified``) the generation was created on.
    :param usage: what the submit answer reported (the generation's own usage wins).
    :param prompt: the prompt asked for.
    :param duration: the duration asked for, in seconds.
    :param reused: the video was already at the destination (``skip_existing``).
    :param client_request_id: the ``X-Client-Request-Id`` its POST carried (None: no POST by this task).
    :param estimated_usd: the price estimated before the POST (None: unknown); ``usage`` is what was billed.
    """
    usage = {**(usage or {}), **generation.usage}
    spent = usage.get("usd_spent")
    return {
        "generation_id": generation.id,
        "status": generation.status.value,
        "raw_status": generation.raw_status,
        "model": model or model_from_id(generation.id),
        "endpoint": endpoint,
        "prompt": prompt,
        "duration": generation.duration if generation.duration is not None else duration,
        "video_url": generation.video_url,
        "video_urls": list(generation.video_urls),
        "video_path": video_path,
        "file_name": generation.file_name,
        "file_size": generation.file_size,
        "usage": usage,
        "estimated_usd": estimated_usd,
        "reused": reused,
        "client_request_id": client_request_id,
        # Billed USD as the service reported it (cost headers or meta.usage); None when it did not.
        "usd_spent": None if reused or not isinstance(spent, (int, float)) else float(spent),
    }


def model_from_id(generation_id: str) -> str | None:
    """The model named by an id of the form ``<uuid>:<model>``, else None.

    :param generation_id: the generation's id.
    """
    _, sep, model = generation_id.partition(":")
    return model if sep and "/" in model else None


def describe_usage(usage: dict[str, Any]) -> str:
    """What a generation cost, as the service reported it (credits shown in USD at the observed rate).

    :param usage: the ``usage`` dict of a result.
    """
    parts = []
    if isinstance(usage.get("usd_spent"), (int, float)):
        parts.append(f"${usage['usd_spent']:.2f}")
    if isinstance(usage.get("credits_used"), (int, float)):
        credits = usage["credits_used"]
        estimate = "" if parts else f" (about ${credits / CREDITS_PER_USD:.2f} at the observed rate)"
        parts.append(f"{credits:,} credits{estimate}")
    if isinstance(usage.get("tokens_used"), (int, float)):
        parts.append(f"{usage['tokens_used']:,} tokens")
    return ", ".join(parts) or "no usage reported"


def annotate_outlets(context: Context, outlets: Any, result: dict[str, Any]) -> None:
    """Put the video's path and generation id in the extra of each outlet Asset's event.

    A DAG scheduled on the Asset then finds the file in ``triggering_asset_events``.

    :param context: the task's context.
    :param outlets: the task's outlets (only Assets are annotated).
    :param result: the task's result dict.
    """
    from airflow.providers.common.compat.sdk import Asset

    extra = {k: result[k] for k in ("generation_id", "video_path", "file_size") if result.get(k) is not None}
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra.update(extra)


def generation_from_event(
    event: Any, timeout: float, hook: KlingHook | None = None, api: str | None = None
) -> Generation:
    """The completed generation from a trigger event, or the matching error (never a silent pass).

    Events hold no signed video URL (the triggerer logs them and Airflow stores them): with ``hook``,
    a success is read once more from the service (one GET) for the usable URL.

    :param event: the trigger's event, as Airflow hands it to the resumed task.
    :param timeout: the task's timeout in seconds, for the timeout error's message.
    :param hook: the hook to read the completed generation with; None returns the event's view.
    :param api: the endpoint the generation was created on (default: the connection's).
    """
    from airflow_provider_kling.exceptions import KlingGenerationFailed, KlingGenerationTimeout
    from airflow_provider_kling.triggers.kling import KlingTriggerEvent

    parsed = KlingTriggerEvent.model_validate(event)
    if parsed.status == "success" and hook is not None:
        from airflow_provider_kling.hooks.kling import raise_for_terminal

        try:
            generation = hook.get_generation(parsed.generation_id, api=api)
            raise_for_terminal(generation)
        except Exception as exc:
            raise fail_fast(exc, parsed.generation_id) from exc
        return generation
    if parsed.status == "success" and parsed.generation is not None:
        return parsed.generation
    if parsed.status == "timeout":
        last = parsed.generation.raw_status if parsed.generation else "pending"
        raise KlingGenerationTimeout(parsed.generation_id, timeout, str(last))
    if parsed.retryable:
        from airflow_provider_kling.exceptions import KlingError

        raise KlingError(f"Kling generation {parsed.generation_id}: {parsed.message}")
    raise fail_fast(KlingGenerationFailed(parsed.generation_id, parsed.message))
