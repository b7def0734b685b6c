"""Operator that turns a still image into a video clip with Kling.

Imported at every DAG parse: only Airflow's own bases load here; the hook, its HTTP clients and the
request model load when a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator, conf

from airflow_provider_kling.links.kling import VIDEO_URL_XCOM_KEY, KlingVideoLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import Generation, KlingRequest

DEFAULT_MODEL = "kling-video/v1/standard/image-to-video"
#: task_state_store key holding the generation id across retries of one task instance.
GENERATION_ID_STATE_KEY = "kling_generation_id"
#: XCom key of the generation id, pushed right after the POST, before any waiting.
GENERATION_ID_XCOM_KEY = "generation_id"

_warned_no_state_store = False


def timeout_seconds(value: Any, field: str = "timeout") -> float:
    """Seconds from a timedelta / pendulum Duration or a number; KlingValidationError otherwise."""
    from airflow_provider_kling.hooks.kling import check_poll_settings

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
        KlingConfigError,
        KlingError,
        KlingForbiddenError,
        KlingGenerationFailed,
    )

    final = (
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


def result_dict(generation: Generation, model: str | None, video_path: str | None = None) -> dict[str, Any]:
    """The small JSON-safe dict returned as XCom: what downstream tasks need."""
    return {
        "generation_id": generation.id,
        "status": generation.status.value,
        "raw_status": generation.raw_status,
        "video_url": generation.video_url,
        "video_path": video_path,
        "file_name": generation.file_name,
        "file_size": generation.file_size,
        "model": model,
        "usage": generation.usage,
    }


class KlingImageToVideoOperator(BaseOperator):
    """Generate a video clip from a still image with Kling, optionally wait for it and download it.

    Every generation argument is templated and validated after rendering, before the paid POST.
    On Airflow 3.3+ the generation id is kept in ``task_state_store``: a retry of the same task
    reconnects to a pending or completed generation instead of paying for a new one.

    :param image_url: http(s) URL of the first frame (jpg/png).
    :param prompt: the text that guides the motion.
    :param tail_image_url: http(s) URL of the last frame (v1 models, v1.6 pro).
    :param static_mask_url: motion-brush static area (v1 models).
    :param dynamic_masks: motion-brush masks: ``[{"mask_url": ..., "trajectories": [{"x": .., "y": ..}]}]``.
    :param duration: "5" or "10" seconds.
    :param negative_prompt: what to keep out of the video.
    :param cfg_scale: 0 to 1, how closely to follow the prompt.
    :param model: the Kling model id.
    :param check_capabilities: False to send a model the provider does not know yet.
    :param kling_conn_id: the ``kling`` connection.
    :param wait_for_completion: wait for the video (default); False returns right after the POST.
    :param deferrable: free the worker while waiting (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between polls.
    :param timeout: how long to wait, a timedelta / pendulum duration or seconds (default 30 minutes).
    :param download_to: a local path or ObjectStoragePath / fsspec URL, a folder or a file name;
        when set, the video is downloaded there and its path returned as ``video_path``.
    :param overwrite: replace an existing file at ``download_to``.
    """

    template_fields: Sequence[str] = (
        "image_url",
        "prompt",
        "tail_image_url",
        "static_mask_url",
        "dynamic_masks",
        "duration",
        "negative_prompt",
        "cfg_scale",
        "model",
        "download_to",
    )
    template_fields_renderers = {"dynamic_masks": "json", "prompt": "md"}
    operator_extra_links = (KlingVideoLink(),)
    ui_color = "#f2e8ff"

    def __init__(
        self,
        *,
        image_url: str,
        prompt: str,
        tail_image_url: str | None = None,
        static_mask_url: str | None = None,
        dynamic_masks: list[dict[str, Any]] | None = None,
        duration: str | int = "5",
        negative_prompt: str | None = None,
        cfg_scale: float | None = None,
        model: str = DEFAULT_MODEL,
        check_capabilities: bool = True,
        kling_conn_id: str = "kling_default",
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        timeout: timedelta | float = timedelta(minutes=30),
        download_to: Any = None,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image_url = image_url
        self.prompt = prompt
        self.tail_image_url = tail_image_url
        self.static_mask_url = static_mask_url
        self.dynamic_masks = dynamic_masks
        self.duration = duration
        self.negative_prompt = negative_prompt
        self.cfg_scale = cfg_scale
        self.model = model
        self.check_capabilities = check_capabilities
        self.kling_conn_id = kling_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.download_to = download_to
        self.overwrite = overwrite

    @property
    def hook(self) -> KlingHook:
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id)

    def build_request(self) -> KlingRequest:
        """Validate the rendered arguments; raises KlingValidationError naming each bad field."""
        from airflow_provider_kling.models import build_request

        fields = {
            "model": self.model,
            "image_url": self.image_url,
            "prompt": self.prompt,
            "tail_image_url": self.tail_image_url,
            "static_mask_url": self.static_mask_url,
            "dynamic_masks": self.dynamic_masks,
            "duration": self.duration,
            "negative_prompt": self.negative_prompt,
            "cfg_scale": self.cfg_scale,
            "check_capabilities": self.check_capabilities,
        }
        return build_request({k: v for k, v in fields.items() if v is not None})

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_kling.hooks.kling import check_poll_settings
        from airflow_provider_kling.models import GenerationStatus

        try:
            request = self.build_request()
            timeout = timeout_seconds(self.timeout)
            check_poll_settings(self.poll_interval, timeout)
            generation_id, prior = self._resume_or_submit(context, request)
        except Exception as exc:
            raise fail_fast(exc) from exc
        context["ti"].xcom_push(key=GENERATION_ID_XCOM_KEY, value=generation_id)
        # Airflow resolves the extra link at every defer too: give it an empty link until the video exists.
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value="")

        if prior is not None and prior.status is GenerationStatus.COMPLETED:
            return self._finish(context, prior)
        if not self.wait_for_completion:
            return {"generation_id": generation_id, "status": "pending", "model": request.model}
        if self.deferrable:
            from airflow_provider_kling.triggers.kling import KlingGenerationTrigger

            self.defer(
                trigger=KlingGenerationTrigger(
                    generation_id=generation_id,
                    kling_conn_id=self.kling_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=time.time() + timeout,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=timeout + 60),
            )
        try:
            generation = self.hook.wait_for_generation(generation_id, self.poll_interval, timeout)
        except Exception as exc:
            raise fail_fast(exc, generation_id) from exc
        return self._finish(context, generation)

    def _resume_or_submit(
        self, context: Context, request: KlingRequest
    ) -> tuple[str, Generation | None]:
        """Reconnect to this task's earlier generation when it is pending or done, else submit anew."""
        from airflow_provider_kling.exceptions import KlingError, KlingNotFoundError
        from airflow_provider_kling.hooks.kling import post_may_have_created
        from airflow_provider_kling.models import GenerationStatus

        global _warned_no_state_store
        store = context.get("task_state_store")
        hook = self.hook
        if store is None:
            if not _warned_no_state_store:
                self.log.warning(
                    "This Airflow has no task_state_store (it arrived in 3.3): a retry of this task "
                    "cannot find its earlier generation and may submit, and pay for, a new one"
                )
                _warned_no_state_store = True
        elif stored := store.get(GENERATION_ID_STATE_KEY):
            try:
                prior = hook.get_generation(str(stored))
            except KlingNotFoundError:
                self.log.warning(
                    "Earlier Kling generation %s is unknown to the service; submitting anew", stored
                )
            else:
                if prior.status is not GenerationStatus.FAILED:
                    self.log.info(
                        "Reconnecting to Kling generation %s (%s) from an earlier try, not submitting again",
                        stored,
                        prior.raw_status,
                    )
                    return str(stored), prior
                self.log.warning(
                    "Earlier Kling generation %s ended in error (%s); submitting anew", stored, prior.error
                )
        self._check_destination_free()
        try:
            generation_id = hook.submit_generation(request)
        except KlingError as exc:
            if post_may_have_created(exc):
                raise AirflowFailException(
                    f"The Kling POST failed in a way that may have created a paid generation ({exc}). "
                    "It is not sent again, so no retry pays twice: check the service's dashboard before "
                    "running this task again."
                ) from exc
            raise
        if store is not None:
            store.set(GENERATION_ID_STATE_KEY, generation_id)
        return generation_id, None

    def _check_destination_free(self) -> None:
        """Refuse, before paying, a download_to that names an existing file (unless overwrite=True)."""
        if not self.download_to or self.overwrite:
            return
        from airflow_provider_kling.exceptions import KlingValidationError
        from airflow_provider_kling.hooks.kling import resolve_destination

        probe = "kling-destination-probe.mp4"
        target = resolve_destination(self.download_to, probe)
        if target.name != probe and target.exists():
            raise KlingValidationError(
                [
                    (
                        "download_to",
                        f"{target} already exists; set overwrite=True to replace it, or name another file",
                    )
                ]
            )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: validate its event, then finish or fail."""
        return self._finish(context, generation_from_event(event, timeout_seconds(self.timeout)))

    def _finish(self, context: Context, generation: Generation) -> dict[str, Any]:
        video_path = None
        if generation.video_url:
            context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=generation.video_url)
        if self.download_to and generation.video_url:
            try:
                video_path = download(self.hook, generation, self.download_to, self.overwrite)
            except Exception as exc:
                raise fail_fast(exc, generation.id) from exc
        self.log.info("Kling generation %s completed: %s", generation.id, video_path or generation.video_url)
        result = result_dict(generation, self.model, video_path)
        annotate_outlets(context, self.outlets, result)
        return result


def annotate_outlets(context: Context, outlets: Any, result: dict[str, Any]) -> None:
    """Put the video's path and generation id in the extra of each outlet Asset's event.

    A DAG scheduled on the Asset then finds the file in ``triggering_asset_events``.
    """
    from airflow.providers.common.compat.sdk import Asset

    extra = {k: result[k] for k in ("generation_id", "video_path", "file_size") if result.get(k) is not None}
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra.update(extra)


def generation_from_event(event: Any, timeout: float) -> Generation:
    """The completed generation from a trigger event, or the matching error (never a silent pass)."""
    from airflow_provider_kling.exceptions import KlingGenerationFailed, KlingGenerationTimeout
    from airflow_provider_kling.triggers.kling import KlingTriggerEvent

    parsed = KlingTriggerEvent.model_validate(event)
    if parsed.status == "success" and parsed.generation is not None:
        return parsed.generation
    if parsed.status == "timeout":
        last = parsed.generation.raw_status if parsed.generation else "pending"
        raise KlingGenerationTimeout(parsed.generation_id, timeout, str(last))
    if parsed.retryable:
        from airflow_provider_kling.exceptions import KlingError

        raise KlingError(f"Kling generation {parsed.generation_id}: {parsed.message}")
    raise fail_fast(KlingGenerationFailed(parsed.generation_id, parsed.message))


def download(hook: KlingHook, generation: Generation, destination: Any, overwrite: bool) -> str:
    """Download a completed generation's video, named after its (sanitised) id inside a folder."""
    from airflow_provider_kling.hooks.kling import safe_file_name

    assert generation.video_url
    return hook.download_video(
        generation.video_url,
        destination,
        file_name=f"{safe_file_name(generation.id)}.mp4",
        expected_size=generation.file_size,
        overwrite=overwrite,
    )
