"""Operators that generate video clips with Kling: image-to-video, text-to-video, and any other model.

Imported at every DAG parse: only Airflow's own bases load here; the hook, its HTTP clients, the
model catalog and the request validators load when a task runs.

Result dicts and event handling live in :mod:`~airflow_provider_kling.utils.results`, files and
sidecars in :mod:`~airflow_provider_kling.utils.artifacts`; their names stay importable from here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator, conf

from airflow_provider_kling.links.kling import VIDEO_URL_XCOM_KEY, KlingVideoLink
from airflow_provider_kling.utils.artifacts import (
    download,
    find_existing_video,
    sidecar_path,
    sidecar_reusable,
    stored_video_link,
    video_file_name,
)
from airflow_provider_kling.utils.results import (
    CREDITS_PER_USD,
    RESULT_KEYS,
    annotate_outlets,
    describe_usage,
    fail_fast,
    generation_from_event,
    model_from_id,
    result_dict,
    timeout_seconds,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import Generation, KlingRequest

__all__ = [
    "CREDITS_PER_USD",
    "DEFAULT_MODEL",
    "DEFAULT_TEXT_MODEL",
    "GENERATION_ID_STATE_KEY",
    "GENERATION_ID_XCOM_KEY",
    "RESULT_KEYS",
    "RESUME_XCOM_KEY",
    "TYPE_CHECKING",
    "VIDEO_URL_XCOM_KEY",
    "KlingBaseVideoOperator",
    "KlingBatchVideoOperator",
    "KlingImageToVideoOperator",
    "KlingTextToVideoOperator",
    "KlingVideoOperator",
    "annotate_outlets",
    "describe_usage",
    "download",
    "fail_fast",
    "find_existing_video",
    "generation_from_event",
    "model_from_id",
    "result_dict",
    "sidecar_path",
    "sidecar_reusable",
    "stored_video_link",
    "timeout_seconds",
    "video_file_name",
]

DEFAULT_MODEL = "kling-video/v1/standard/image-to-video"
DEFAULT_TEXT_MODEL = "kling-video/v1.6/standard/text-to-video"
#: task_state_store key holding the generation id (and the request's hash) across retries of one task.
GENERATION_ID_STATE_KEY = "kling_generation_id"
#: XCom key of the generation id, pushed right after the POST, before any waiting.
GENERATION_ID_XCOM_KEY = "generation_id"
#: XCom key of what a deferred task needs when it resumes (endpoint, submit usage, sidecar fields).
RESUME_XCOM_KEY = "kling_resume"

_warned_no_state_store = False


class KlingBaseVideoOperator(BaseOperator):
    """What every Kling operator shares: validate, submit once, wait (deferrable), download, report.

    Every argument is templated and validated against the model catalog after rendering, before
    the paid POST. On Airflow 3.3+ the generation id and the request's hash are kept in
    ``task_state_store``: a retry of the same request reconnects to its pending or completed
    generation instead of paying for a new one; a changed request (a cleared task whose prompt was
    edited) is a new generation.

    :param model: the Kling model id (see the README's model table).
    :param parameters: any other field of the chosen model, e.g. ``{"generate_audio": False}``.
    :param check_capabilities: False to send a model or fields the catalog does not know yet, unchecked.
    :param kling_conn_id: the ``kling`` connection.
    :param wait_for_completion: wait for the video (default); False returns right after the POST.
    :param deferrable: free the worker while waiting (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between polls.
    :param timeout: how long to wait, a timedelta / pendulum duration or seconds (default 30 minutes).
    :param download_to: a local path or ObjectStoragePath / fsspec URL, a folder or a file name;
        when set, the video is downloaded there and its path returned as ``video_path``.
    :param overwrite: replace an existing file at ``download_to``.
    :param skip_existing: when ``download_to`` already holds a video made from the same request (its
        ``<video>.kling.json`` sidecar names the request's hash), return it and pay nothing; the XCom
        dict then says ``reused: True``. A changed prompt, field or image is a new request, and a video
        made against another service (the sidecar's ``base_url``, e.g. the emulator) is not reused.
    :param presign_inputs: send private ``s3://`` / ``gs://`` images as presigned URLs (short expiry,
        masked in logs) when the storage can sign; False always sends their bytes as Base64.
    """

    #: The kind of model this operator submits (None: any kind).
    kind: ClassVar[str | None] = None
    #: The named arguments that are request fields, in the order they are documented.
    request_field_names: ClassVar[tuple[str, ...]] = ()

    template_fields: Sequence[str] = ("model", "parameters", "download_to")
    template_fields_renderers = {"parameters": "json"}
    operator_extra_links = (KlingVideoLink(),)
    ui_color = "#f2e8ff"

    def __init__(
        self,
        *,
        model: str,
        parameters: dict[str, Any] | None = None,
        check_capabilities: bool = True,
        kling_conn_id: str = "kling_default",
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        timeout: timedelta | float = timedelta(minutes=30),
        download_to: Any = None,
        overwrite: bool = False,
        skip_existing: bool = False,
        presign_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.parameters = parameters
        self.check_capabilities = check_capabilities
        self.kling_conn_id = kling_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.download_to = download_to
        self.overwrite = overwrite
        self.skip_existing = skip_existing
        self.presign_inputs = presign_inputs

    @cached_property
    def hook(self) -> KlingHook:
        """One hook (one HTTP session, one connection read) for the whole task."""
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id)

    def request_fields(self) -> dict[str, Any]:
        """The request's fields: ``parameters`` with the named arguments on top (None means not set)."""
        from airflow_provider_kling.exceptions import KlingValidationError

        params = self.parameters or {}
        if not isinstance(params, dict):
            raise KlingValidationError(
                [("parameters", f"must be a mapping of field names to values, got {type(params).__name__}")]
            )
        named = {name: getattr(self, name) for name in self.request_field_names}
        both = sorted(k for k, v in named.items() if v is not None and k in params)
        if both:
            raise KlingValidationError(
                [(f"parameters.{k}", f"is also given as the argument {k}=; give it once") for k in both]
            )
        return {**params, **{k: v for k, v in named.items() if v is not None}, "model": self.model}

    def build_request(self) -> KlingRequest:
        """Validate the rendered arguments and read file inputs (KlingValidationError names each field)."""
        from airflow_provider_kling.models import build_request, resolve_file_inputs

        request = build_request(
            self.request_fields(),
            check_capabilities=self.check_capabilities,
            kind=self.kind,
            log=self.log,
        )
        return resolve_file_inputs(request, self.log, presign=getattr(self, "presign_inputs", True))

    def _asked(self) -> dict[str, Any]:
        """The prompt and duration asked for, as reported in the XCom dict (never raises)."""
        params = self.parameters if isinstance(self.parameters, dict) else {}
        prompt = getattr(self, "prompt", None) or params.get("prompt")
        shots = params.get("multi_prompt")
        if not prompt and isinstance(shots, list) and shots:
            prompt = shots[0].get("prompt") if isinstance(shots[0], dict) else shots[0]
        duration = getattr(self, "duration", None) or params.get("duration")
        try:
            seconds = float(duration) if duration is not None else None
        except (TypeError, ValueError):
            seconds = None
        return {"prompt": None if prompt is None else str(prompt), "duration": seconds}

    # ------------------------------------------------------------------------------ execute
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_kling.hooks.kling import check_poll_settings
        from airflow_provider_kling.models import GenerationStatus

        # First, so the extra link resolves (empty) whatever happens next; the video replaces it.
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value="")
        try:
            request = self.build_request()
            timeout = timeout_seconds(self.timeout)
            check_poll_settings(self.poll_interval, timeout)
            api = self.hook.endpoint.api
            base_url = self.hook.endpoint.base_url
            self._submitted: Generation | None = None
            self._submitted_at: float | None = None
            if self.skip_existing and self.download_to:
                earlier = find_existing_video(
                    self.download_to, request.fingerprint(), self.log, base_url=base_url
                )
                if earlier is not None:
                    return self._reuse(context, earlier, api)
            generation_id, prior = self._resume_or_submit(context, request)
        except Exception as exc:
            raise fail_fast(exc) from exc
        self._generation_id: str | None = generation_id
        first = prior or self._submitted
        usage = dict(first.usage) if first is not None else {}
        # base_url: skip_existing reuses a video only from the same service (not the emulator's).
        sidecar = {"model": request.model, "request": request.fingerprint(), "api": api, "base_url": base_url}
        # Credits are billed at submit; an answer without them is counted from the final poll.
        count_credits = self._submitted is not None and "credits_used" not in usage
        done: dict[str, Any] = {
            "api": api,
            "usage": usage,
            "sidecar": sidecar,
            "count_credits": count_credits,
        }

        if prior is not None and prior.status is GenerationStatus.COMPLETED:
            return self._finish(context, prior, **done)
        if not self.wait_for_completion:
            from airflow_provider_kling.models import Generation

            pending = first or Generation(id=generation_id, status=GenerationStatus.PENDING)
            return result_dict(pending, request.model, endpoint=api, usage=usage, **self._asked())
        if self.deferrable:
            from airflow_provider_kling.triggers.kling import KlingGenerationTrigger

            end_time = time.time() + timeout
            self.log.info(
                "Deferring: Kling generation %s is polled every %s s by the triggerer until %s. A "
                "triggerer with airflow-provider-kling installed must be running, or this task waits "
                "until that deadline.",
                generation_id,
                self.poll_interval,
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(end_time)),
            )
            # Also kept in XCom: `dag.test()` resumes with the event alone, dropping these kwargs.
            context["ti"].xcom_push(key=RESUME_XCOM_KEY, value=done)
            self.defer(
                trigger=KlingGenerationTrigger(
                    generation_id=generation_id,
                    kling_conn_id=self.kling_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=end_time,
                    api=api,
                    model=request.model,
                    submitted_at=self._submitted_at,
                ),
                method_name="execute_complete",
                kwargs=done,
                # Slightly past the trigger's own deadline: the trigger reports the timeout itself.
                timeout=timedelta(seconds=timeout + 60),
            )
        from airflow_provider_kling import metrics
        from airflow_provider_kling.exceptions import KlingGenerationFailed, KlingGenerationTimeout

        try:
            generation = self.hook.wait_for_generation(generation_id, self.poll_interval, timeout, api=api)
        except (KlingGenerationFailed, KlingGenerationTimeout) as exc:
            outcome = "failed" if isinstance(exc, KlingGenerationFailed) else "timeout"
            metrics.finished(outcome, request.model, self._submitted_at, time.time())
            raise fail_fast(exc, generation_id) from exc
        except Exception as exc:
            raise fail_fast(exc, generation_id) from exc
        # Waiting here, this task saw the end (deferred, the trigger reports it).
        metrics.finished("completed", request.model, self._submitted_at, time.time())
        return self._finish(context, generation, **done)

    def _reuse(self, context: Context, found: tuple[Any, dict[str, Any]], api: str) -> dict[str, Any]:
        """Return a video the destination already holds from the same request (skip_existing)."""
        from airflow_provider_kling import metrics
        from airflow_provider_kling.models import Generation, GenerationStatus

        video, record = found
        generation = Generation(
            id=str(record.get("generation_id") or ""),
            status=GenerationStatus.COMPLETED,
            raw_status="completed",
            file_name=video.name,
            file_size=record.get("file_size"),
        )
        self._generation_id = generation.id
        context["ti"].xcom_push(key=GENERATION_ID_XCOM_KEY, value=generation.id)
        if lasting := stored_video_link(str(video)):
            context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=lasting)
        usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
        result = result_dict(
            generation,
            record.get("model") or self.model,
            str(video),
            endpoint=record.get("api") or api,
            usage=usage,
            reused=True,
            **self._asked(),
        )
        metrics.incr(metrics.REUSED, result["model"])
        self.log.info(
            "%s already holds Kling generation %s of this same request (skip_existing): reused, nothing paid",
            video,
            generation.id,
        )
        annotate_outlets(context, self.outlets, result)
        self._result = result
        return result

    def _resume_or_submit(self, context: Context, request: KlingRequest) -> tuple[str, Generation | None]:
        """Reconnect to this task's earlier generation of the same request, else submit anew.

        :return: the generation id, and the earlier generation when reconnecting (the submit answer
            of a new one is kept in ``self._submitted``).

        Not Airflow 3.3's ``ResumableJobMixin``: it gives weaker guarantees here. A failed
        ``task_state_store.set`` after its submit is a plain retryable error (the retry pays again),
        it reconnects without comparing the request (a cleared task with an edited prompt would get
        the old video), and it covers the synchronous poll only, not the deferrable path.
        """
        from airflow_provider_kling.exceptions import KlingError, KlingNotFoundError
        from airflow_provider_kling.hooks.kling import post_may_have_created
        from airflow_provider_kling.models import GenerationStatus

        global _warned_no_state_store
        store = context.get("task_state_store")
        hook = self.hook
        fingerprint = request.fingerprint()
        if store is None:
            if not _warned_no_state_store:
                self.log.warning(
                    "This Airflow has no task_state_store (it arrived in 3.3): a retry of this task "
                    "cannot find its earlier generation and may submit, and pay for, a new one"
                )
                _warned_no_state_store = True
        elif stored := store.get(GENERATION_ID_STATE_KEY):
            stored_id, stored_hash, stored_api = _read_state(stored)
            if stored_hash not in (None, fingerprint):
                self.log.info(
                    "The request changed since Kling generation %s was submitted (e.g. an edited "
                    "prompt): submitting a new generation",
                    stored_id,
                )
            else:
                try:
                    prior = hook.get_generation(stored_id, api=stored_api)
                except KlingNotFoundError:
                    self.log.warning(
                        "Earlier Kling generation %s is unknown to the service; submitting anew", stored_id
                    )
                else:
                    if prior.status is not GenerationStatus.FAILED:
                        from airflow_provider_kling import metrics

                        metrics.incr(metrics.REUSED, request.model)
                        when = stored.get("submitted_at") if isinstance(stored, dict) else None
                        if isinstance(when, (int, float)):
                            self._submitted_at = float(when)
                        self.log.info(
                            "Reconnecting to Kling generation %s (%s) from an earlier try, not submitting "
                            "again",
                            stored_id,
                            prior.raw_status,
                        )
                        context["ti"].xcom_push(key=GENERATION_ID_XCOM_KEY, value=stored_id)
                        return stored_id, prior
                    self.log.warning(
                        "Earlier Kling generation %s ended in error (%s); submitting anew",
                        stored_id,
                        prior.error,
                    )
        self._check_destination_free()
        try:
            submitted = hook.submit(request)
            self._submitted_at = time.time()
        except KlingError as exc:
            if post_may_have_created(exc):
                raise AirflowFailException(
                    f"The Kling POST failed in a way that may have created a paid generation ({exc}). "
                    "It is not sent again, so no retry pays twice: check the service's dashboard before "
                    "running this task again."
                ) from exc
            raise
        # Between the paid POST and a durable record of its id, any failure must not be retried:
        # the retry would not find the id and would pay again.
        try:
            if store is not None:
                store.set(
                    GENERATION_ID_STATE_KEY,
                    {
                        "id": submitted.id,
                        "request": fingerprint,
                        "api": hook.endpoint.api,
                        "submitted_at": self._submitted_at,
                    },
                )
            context["ti"].xcom_push(key=GENERATION_ID_XCOM_KEY, value=submitted.id)
        except Exception as exc:
            raise AirflowFailException(
                f"Kling generation {submitted.id} was submitted (and paid for) but its id could not be "
                f"recorded ({type(exc).__name__}: {exc}). The task is not retried, so it does not pay "
                f"twice: wait for it with KlingGenerationSensor(generation_id={submitted.id!r})."
            ) from exc
        from airflow_provider_kling import metrics

        self._submitted = submitted
        metrics.incr(metrics.SUBMITTED, request.model)
        metrics.credits(submitted.usage, request.model)
        return submitted.id, None

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

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """As Airflow's, with a clear message when the deferral timed out (no triggerer ran the poll)."""
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except Exception as exc:
            if type(exc).__name__ != "TaskDeferralTimeout":
                raise
            from airflow_provider_kling.exceptions import KlingError

            generation_id = context["ti"].xcom_pull(task_ids=self.task_id, key=GENERATION_ID_XCOM_KEY)
            raise KlingError(
                f"Kling generation {generation_id}: the deferral timed out, so no triggerer reported on it "
                "(is a triggerer with airflow-provider-kling running?). The generation may have finished "
                "on the service; a retry of this task reconnects to it (Airflow 3.3+) instead of paying "
                "again."
            ) from exc

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any],
        api: str | None = None,
        usage: dict[str, Any] | None = None,
        sidecar: dict[str, Any] | None = None,
        count_credits: bool = False,
    ) -> dict[str, Any]:
        """Resume after the trigger: validate its event, then finish or fail."""
        if api is None:
            kept = context["ti"].xcom_pull(task_ids=self.task_id, key=RESUME_XCOM_KEY)
            if isinstance(kept, dict):
                api, usage, sidecar = kept.get("api"), kept.get("usage"), kept.get("sidecar")
                count_credits = bool(kept.get("count_credits"))
        self._generation_id = event.get("generation_id") if isinstance(event, dict) else None
        # The event holds the video URL without its signature: the generation is read once more.
        generation = generation_from_event(event, timeout_seconds(self.timeout), self.hook, api)
        return self._finish(
            context, generation, api=api, usage=usage, sidecar=sidecar, count_credits=count_credits
        )

    def _finish(
        self,
        context: Context,
        generation: Generation,
        *,
        api: str | None = None,
        usage: dict[str, Any] | None = None,
        sidecar: dict[str, Any] | None = None,
        count_credits: bool = False,
    ) -> dict[str, Any]:
        from airflow_provider_kling import metrics
        from airflow_provider_kling.exceptions import KlingError

        if not generation.video_url:
            # The service may fill the URL in on a later poll: a retry reconnects and asks again.
            raise KlingError(
                f"Kling generation {generation.id} is {generation.raw_status!r} but the answer holds no "
                "video URL; a retry reconnects to it and polls again"
            )
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=generation.video_url)
        video_path = None
        if self.download_to:
            try:
                video_path = download(
                    self.hook, generation, self.download_to, self.overwrite, sidecar={**(sidecar or {})}
                )
            except Exception as exc:
                raise fail_fast(exc, generation.id) from exc
            if lasting := stored_video_link(video_path):
                context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=lasting)
        result = result_dict(generation, self.model, video_path, endpoint=api, usage=usage, **self._asked())
        self.log.info(
            "Kling generation %s completed: %s; spent %s",
            generation.id,
            video_path or "video ready (not downloaded)",
            describe_usage(result["usage"]),
        )
        if count_credits:
            metrics.credits(generation.usage, result["model"])
        annotate_outlets(context, self.outlets, result)
        self._result = result
        return result

    # ------------------------------------------------------------------------------ lineage
    def _lineage(self) -> Any:
        from airflow_provider_kling.lineage import operator_lineage
        from airflow_provider_kling.models import build_request

        try:
            # The inputs as the user named them (s3://..., a path), not the data URIs sent.
            fields = build_request(
                self.request_fields(), check_capabilities=self.check_capabilities, kind=self.kind
            ).fields
        except Exception:
            fields = {}
        return operator_lineage(
            fields, getattr(self, "_result", None), getattr(self, "_generation_id", None), self.model
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the media inputs, the downloaded video and the generation (id, model, usage)."""
        return self._lineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage on failure: the inputs, and the generation when one was submitted."""
        return self._lineage()


class KlingImageToVideoOperator(KlingBaseVideoOperator):
    """Generate a video clip from a still image with any image-to-video model of the catalog.

    Image inputs (``image_url``, ``tail_image_url``, masks) take an http(s) URL, a Base64 data URI, or a
    file: a local path, an ObjectStoragePath or an fsspec URL (``s3://``, ``gs://``, ``file://``), which
    is read, checked (PNG/JPEG, the model's size limit) and sent as a data URI.

    :param image_url: the first frame.
    :param prompt: the text that guides the motion.
    :param tail_image_url: the last frame (models that take one).
    :param static_mask_url: motion-brush static area (also accepted as ``parameters={"static_mask": ...}``).
    :param dynamic_masks: motion-brush masks: ``[{"mask_url": ..., "trajectories": [{"x": .., "y": ..}]}]``.
    :param duration: seconds: 5 or 10, or 3 to 15 on v3 models.
    :param negative_prompt: what to keep out of the video.
    :param cfg_scale: 0 to 1, how closely to follow the prompt.
    :param model: an image-to-video model id (default the seed's v1 standard).
    :param parameters: any other field of the model (``generate_audio``, ``camera_control``, ...).
    """

    kind = "image-to-video"
    request_field_names = (
        "image_url",
        "prompt",
        "tail_image_url",
        "static_mask_url",
        "dynamic_masks",
        "duration",
        "negative_prompt",
        "cfg_scale",
    )
    template_fields: Sequence[str] = (*request_field_names, *KlingBaseVideoOperator.template_fields)
    template_fields_renderers = {"dynamic_masks": "json", "parameters": "json"}

    def __init__(
        self,
        *,
        image_url: Any,
        prompt: str | None = None,
        tail_image_url: Any = None,
        static_mask_url: Any = None,
        dynamic_masks: list[dict[str, Any]] | None = None,
        duration: str | int | None = None,
        negative_prompt: str | None = None,
        cfg_scale: float | None = None,
        model: str = DEFAULT_MODEL,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, **kwargs)
        self.image_url = image_url
        self.prompt = prompt
        self.tail_image_url = tail_image_url
        self.static_mask_url = static_mask_url
        self.dynamic_masks = dynamic_masks
        self.duration = duration
        self.negative_prompt = negative_prompt
        self.cfg_scale = cfg_scale


class KlingTextToVideoOperator(KlingBaseVideoOperator):
    """Generate a video clip from text with any text-to-video model of the catalog.

    :param prompt: the text to turn into video (or ``parameters={"multi_prompt": [...]}`` on v3 models).
    :param aspect_ratio: ``16:9`` (the service's default), ``9:16`` or ``1:1``.
    :param duration: seconds: 5 or 10, or 3 to 15 on v3 models.
    :param negative_prompt: what to keep out of the video.
    :param cfg_scale: 0 to 1, how closely to follow the prompt.
    :param model: a text-to-video model id (default ``kling-video/v1.6/standard/text-to-video``).
    :param parameters: any other field of the model (``generate_audio``, ``camera_control``, ...).
    """

    kind = "text-to-video"
    request_field_names = ("prompt", "aspect_ratio", "duration", "negative_prompt", "cfg_scale")
    template_fields: Sequence[str] = (*request_field_names, *KlingBaseVideoOperator.template_fields)

    def __init__(
        self,
        *,
        prompt: str | None = None,
        aspect_ratio: str | None = None,
        duration: str | int | None = None,
        negative_prompt: str | None = None,
        cfg_scale: float | None = None,
        model: str = DEFAULT_TEXT_MODEL,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, **kwargs)
        self.prompt = prompt
        self.aspect_ratio = aspect_ratio
        self.duration = duration
        self.negative_prompt = negative_prompt
        self.cfg_scale = cfg_scale


class KlingVideoOperator(KlingBaseVideoOperator):
    """Generate a video with any model of the catalog: multi-image, effects, avatar, o1 reference and
    edit, motion control, or image/text-to-video, all fields given in ``parameters``.

    :param model: any Kling model id.
    :param parameters: the model's fields, e.g. ``{"image_url": ..., "audio_url": ...}`` for an avatar.
    :param prompt: the prompt, for models that take one (or in ``parameters``).
    """

    request_field_names = ("prompt",)
    template_fields: Sequence[str] = (*request_field_names, *KlingBaseVideoOperator.template_fields)

    def __init__(self, *, model: str, prompt: str | None = None, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self.prompt = prompt


class KlingBatchVideoOperator(KlingBaseVideoOperator):
    """Generate a video for every row of a manifest: the catalog-scale job, in one task.

    ``manifest`` is a JSONL or CSV file (local, or ``s3://`` / ``gs://`` through ObjectStoragePath) or a
    list of dicts (e.g. from XCom), one request per row: any model of the catalog (``model`` column,
    default ``model=``), per-row fields on top of ``parameters``, and a row key (``key_field``) that
    names the video: ``<output_prefix>/<key>.mp4``, with its ``.kling.json`` sidecar beside it.

    Every row is validated (and every file input checked) before anything is paid: one report names
    every bad row and nothing is sent. Then at most ``max_active`` generations are in flight at once
    (the service's concurrency limit; a 429 slows the batch down and never fails a row). Deferrable,
    one :class:`~airflow_provider_kling.triggers.kling.KlingBatchTrigger` polls all pending ids and the
    worker comes back to store finished videos and submit the next rows; otherwise the worker polls.
    At the end a results manifest (JSONL: key, generation id, status, video, size, usage, error) is
    written to ``<output_prefix>/<results_name>`` and XCom holds only a small summary with its URI.

    Each paid id is recorded before anything else happens (``task_state_store`` on Airflow 3.3+, state
    objects under ``<output_prefix>/.kling-batch/`` otherwise): a crash, retry or clear reconnects to
    its generations and pays nothing twice. With ``skip_existing`` (the default) a row whose video is
    already under the prefix from the same request is reused: re-running a day pays nothing. Each state
    object is replaced whole (a temporary file renamed into place, or one PUT): a failed write leaves the
    previous state; a state object that cannot be read fails the task before anything is sent, naming it.

    One run at a time writes an output prefix: before sending anything a batch takes the lease
    ``<output_prefix>/.kling-batch.lease`` (its dag_id, task_id, run_id, map_index, try and host). A
    different run finding a live lease fails before any POST, naming the lease and its holder; the same
    task instance's retries, clears and resumptions take it over. A lease expires 10 minutes after its
    batch's deadline (``timeout`` after the try started) and is then taken over as stale; it is deleted
    when the batch ends (results written) or fails with an error no retry can fix. A run that died or
    ran out of retries keeps it until it expires: delete it by hand to free the prefix sooner.

    :param manifest: the rows: a JSONL / CSV path or URL, an ObjectStoragePath, or a list of dicts.
    :param output_prefix: the folder (local or object storage) the videos and results go to.
    :param model: the model of rows that name none.
    :param parameters: fields shared by every row (a row's own fields win).
    :param key_field: the column holding the row key (default ``key``; rows without one are
        ``row-00000``, ``row-00001``... by position).
    :param max_active: most generations in flight at once (default 4; templated).
    :param fail_on_partial_error: fail the task when any row failed (default); False succeeds with the
        failures listed in the results manifest and counted in the summary.
    :param skip_existing: reuse videos already under the prefix from the same request (default True).
    :param results_name: the results manifest's file name under ``output_prefix``.
    :param download_concurrency: videos downloaded at once by the worker.
    :param submit_concurrency: POSTs in flight at once while filling the window.
    :param presign_seconds: validity of presigned input URLs.
    :param timeout: how long the whole batch may take (default 24 hours).
    :param resend_unknown: at the start of a try (a retry or a clear), send again the rows whose POST
        may have created a generation whose id never came back (a worker killed mid-POST, a dropped
        answer). Default False: they are reported as ``unknown`` and never paid twice. The service
        takes no idempotency key, so nothing can tell whether such a POST was billed: True may pay
        twice for those rows; set it after checking the service's dashboard.
    """

    template_fields: Sequence[str] = ("manifest", "output_prefix", "model", "parameters", "max_active")
    template_fields_renderers = {"parameters": "json"}
    operator_extra_links = ()  # type: ignore[assignment]

    def __init__(
        self,
        *,
        manifest: Any,
        output_prefix: Any,
        model: str = DEFAULT_MODEL,
        key_field: str = "key",
        max_active: int = 4,
        fail_on_partial_error: bool = True,
        skip_existing: bool = True,
        results_name: str = "results.jsonl",
        download_concurrency: int = 4,
        submit_concurrency: int = 8,
        presign_seconds: int = 900,
        timeout: timedelta | float = timedelta(hours=24),
        resend_unknown: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, skip_existing=skip_existing, timeout=timeout, **kwargs)
        self.manifest = manifest
        self.output_prefix = output_prefix
        self.key_field = key_field
        self.max_active = max_active
        self.fail_on_partial_error = fail_on_partial_error
        self.results_name = results_name
        self.download_concurrency = max(1, int(download_concurrency))
        self.submit_concurrency = max(1, int(submit_concurrency))
        self.presign_seconds = int(presign_seconds)
        self.resend_unknown = resend_unknown

    @property
    def timeout_seconds(self) -> float:
        return timeout_seconds(self.timeout)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_kling.batch import BatchRun
        from airflow_provider_kling.hooks.kling import check_poll_settings

        try:
            if isinstance(self.max_active, str) and self.max_active.strip().isdigit():
                self.max_active = int(self.max_active)  # rendered from a template
            if (
                not isinstance(self.max_active, int)
                or isinstance(self.max_active, bool)
                or self.max_active < 1
            ):
                from airflow_provider_kling.exceptions import KlingValidationError

                raise KlingValidationError(
                    [("max_active", f"must be a whole number >= 1, got {self.max_active!r}")]
                )
            check_poll_settings(self.poll_interval, self.timeout_seconds)
            run = BatchRun(self, context)
            self.log.info(
                "Kling batch: %s rows validated; videos go to %s; at most %s in flight; state in %s",
                len(run.rows),
                run.prefix,
                self.max_active,
                run.state.where,
            )
        except Exception as exc:
            raise fail_fast(exc) from exc
        return self._drive(context, run, None)

    def execute_complete(  # type: ignore[override]
        self, context: Context, event: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Resume after the batch trigger: apply what ended, store videos, submit more, defer again."""
        from airflow_provider_kling.batch import BatchRun

        try:
            if isinstance(self.max_active, str) and self.max_active.strip().isdigit():
                self.max_active = int(self.max_active)
            run = BatchRun(self, context, first_pass=False)
        except Exception as exc:
            raise fail_fast(exc) from exc
        finished = event.get("finished") if isinstance(event, dict) else None
        if isinstance(event, dict) and event.get("status") == "error":
            # Poll once from here before deferring again, so a trigger that keeps failing at once
            # (a connection the triggerer cannot see) cannot spin: each round takes a poll interval.
            self.log.warning(
                "The batch trigger stopped: %s; polling once from the worker", event.get("message")
            )
            time.sleep(min(self.poll_interval, max(0.0, run.time_left())))
            run.poll_in_flight()
        return self._drive(context, run, finished if isinstance(finished, dict) else None)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that timed out (no triggerer ran it) resumes the batch: it polls from the worker."""
        if next_method == "__fail__":
            self.log.warning(
                "The batch's deferral timed out (is a triggerer with airflow-provider-kling running?): "
                "the worker polls the batch's generations itself"
            )
            return self.execute_complete(context, None)
        return super().resume_execution(next_method, next_kwargs, context)

    def _drive(self, context: Context, run: Any, finished: dict[str, Any] | None) -> dict[str, Any]:
        """Run the batch loop until it has to wait (defer) or is done (results and summary)."""
        from airflow_provider_kling.exceptions import KlingError

        try:
            outcome = run.step(finished)
            while outcome.pending or outcome.waiting:
                if run.time_left() <= 0:
                    run.expire_in_flight(f"still pending when the batch's timeout of {self.timeout} passed")
                    break
                if outcome.backoff:
                    time.sleep(min(outcome.backoff, max(0.0, run.time_left())))
                    outcome = run.step()
                    continue
                if not outcome.pending:
                    outcome = run.step()
                    continue
                if self.deferrable:
                    self._defer_batch(run, outcome)
                time.sleep(min(self.poll_interval, max(0.0, run.time_left())))
                run.poll_in_flight()
                outcome = run.step()
            summary = run.finish()
        except KlingError as exc:
            final = fail_fast(exc)
            if isinstance(final, AirflowFailException):
                run.lease.release()  # failed for good (no retry): the prefix is free for another run
            raise final from exc
        self.log.info(
            "Kling batch finished: %s of %s rows completed (%s reused), %s failed, %s generation(s) paid "
            "by this try; results in %s",
            summary["completed"],
            summary["rows"],
            summary["reused"],
            summary["failed"],
            summary["posts"],
            summary["results"],
        )
        if summary["failed"] and self.fail_on_partial_error:
            context["ti"].xcom_push(key="batch_summary", value=summary)
            raise AirflowFailException(
                f"{summary['failed']} of {summary['rows']} rows failed (see {summary['results']}); the "
                "others are stored. A retry or clear pays only for rows that were never sent "
                "(fail_on_partial_error=False succeeds with the failures listed)."
            )
        return summary

    def _defer_batch(self, run: Any, outcome: Any) -> None:
        from airflow_provider_kling.triggers.kling import KlingBatchTrigger

        pending = outcome.pending
        # With rows still to submit, come back when half the window is free; else when all ended.
        min_finished = max(1, (len(pending) + 1) // 2) if outcome.waiting else len(pending)
        end_time = float(run.state.meta["deadline"])
        self.log.info(
            "Deferring: %s generation(s) in flight, %s row(s) still to submit; the triggerer reports when "
            "%s have ended",
            len(pending),
            outcome.waiting,
            min_finished,
        )
        self.defer(
            trigger=KlingBatchTrigger(
                pending=pending,
                kling_conn_id=self.kling_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                min_finished=min_finished,
            ),
            method_name="execute_complete",
            # Slightly past the trigger's own deadline: the trigger reports the timeout itself.
            timeout=timedelta(seconds=max(1.0, end_time - time.time()) + 60),
        )


def _read_state(stored: Any) -> tuple[str, str | None, str | None]:
    """(id, request hash, endpoint) from a task_state_store value (the first release stored the id alone)."""
    if isinstance(stored, dict):
        return str(stored.get("id")), stored.get("request"), stored.get("api")
    return str(stored), None, None
