"""What every single-generation Kling operator shares: :class:`KlingBaseVideoOperator` (validate,
submit once, wait or defer, download, report) and the keys it keeps in XCom and ``task_state_store``.

Imported at every DAG parse: only Airflow's own bases load here; the hook, its HTTP clients, the
model catalog and the request validators load when a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowFailException, conf

from airflow_provider_kling.links.kling import VIDEO_URL_XCOM_KEY, KlingVideoLink
from airflow_provider_kling.operators._reconnect import (
    GENERATION_ID_STATE_KEY,  # noqa: F401  (public here since the first release)
    earlier_generation,
    record_submission,
)
from airflow_provider_kling.utils.artifacts import download, find_existing_video, stored_video_link
from airflow_provider_kling.utils.deferral import RetrySafeDeferral
from airflow_provider_kling.utils.results import (
    annotate_outlets,
    describe_usage,
    fail_fast,
    generation_from_event,
    result_dict,
    timeout_seconds,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.cost.estimate import Estimate
    from airflow_provider_kling.schemas.generation import Generation
    from airflow_provider_kling.schemas.request import KlingRequest

DEFAULT_MODEL = "kling-video/v1/standard/image-to-video"
DEFAULT_TEXT_MODEL = "kling-video/v1.6/standard/text-to-video"
#: XCom key of the generation id, pushed right after the POST, before any waiting.
GENERATION_ID_XCOM_KEY = "generation_id"
#: XCom key of what a deferred task needs when it resumes (endpoint, submit usage, sidecar fields).
RESUME_XCOM_KEY = "kling_resume"
#: What a task keeps from its submit for the end (the keywords of ``_finish``), in XCom and next_kwargs.
_FINISH_KEYS = ("api", "usage", "sidecar", "count_credits", "estimated_usd")


class KlingBaseVideoOperator(RetrySafeDeferral):
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
        dict then says ``reused: True``. A changed prompt, field or input is a new request, and a video
        made against another service (the sidecar's ``base_url``, e.g. the emulator) is not reused.
        Default: True whenever ``download_to`` is set; False forces a new generation.
    :param presign_inputs: send private ``s3://`` / ``gs://`` images as presigned URLs (short expiry,
        masked in logs) when the storage can sign; False always sends their bytes as Base64.
    :param max_usd: the most this task may pay, in USD: a request whose estimate is above it is not
        sent and the task fails naming the cap and the estimate; with a cap set, an unknown price
        fails the task before any POST (give it in the connection's ``prices`` extra).
    :param dry_run: validate and estimate the request, return the plan as XCom, and pay nothing.

    Media inputs (images, video, audio, in named arguments or in ``parameters``) take a URL, a data
    URI, a local path, an ObjectStoragePath / fsspec URL, or an upstream Kling task's result (its XCom
    dict or its ``.output``): see :func:`~airflow_provider_kling.utils.inputs.resolve_media_inputs`.
    A request counts each input by what it is (generation id, object and ETag, content hash), never by
    a signed URL, so a re-run of a chained DAG reuses every step's video.
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
        skip_existing: bool | None = None,
        presign_inputs: bool = True,
        max_usd: float | None = None,
        dry_run: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_usd = max_usd
        # Not ``self.dry_run``: that name is BaseOperator's own method (``airflow tasks test --dry-run``).
        self.plan_only = bool(dry_run)
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
        from airflow_provider_kling.schemas.file_inputs import resolve_file_inputs
        from airflow_provider_kling.schemas.request import build_request
        from airflow_provider_kling.utils.inputs import resolve_media_inputs

        # Files and upstream results become URLs first: the validator checks what is sent.
        inputs = resolve_media_inputs(self.request_fields(), self.hook, log=self.log)
        request = build_request(
            inputs.fields,
            check_capabilities=self.check_capabilities,
            kind=self.kind,
            log=self.log,
        )
        request = resolve_file_inputs(request, self.log, presign=getattr(self, "presign_inputs", True))
        return inputs.stabilize(request)

    def reuses_existing(self) -> bool:
        """Whether this task looks for its video at ``download_to`` first (``skip_existing``).

        Unset, it does whenever ``download_to`` is set: a re-run pays nothing for what is there.
        """
        if self.skip_existing is None:
            return bool(self.download_to)
        return bool(self.skip_existing) and bool(self.download_to)

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
        from airflow_provider_kling.schemas.generation import GenerationStatus
        from airflow_provider_kling.utils.validation import check_poll_settings

        # First, so the extra link resolves (empty) whatever happens next; the video replaces it.
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value="")
        try:
            request = self.build_request()
            timeout = timeout_seconds(self.timeout)
            check_poll_settings(self.poll_interval, timeout)
            estimate = self._estimate(request)
            if self.plan_only:
                return self._plan(estimate)
            api = self.hook.endpoint.api
            base_url = self.hook.endpoint.base_url
            self._submitted: Generation | None = None
            self._submitted_at: float | None = None
            if self.reuses_existing():
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
            "estimated_usd": estimate.usd,
        }

        if prior is not None and prior.status is GenerationStatus.COMPLETED:
            return self._finish(context, prior, **done)
        if not self.wait_for_completion:
            from airflow_provider_kling.hooks._request_id import from_sidecar
            from airflow_provider_kling.schemas.generation import Generation

            pending = first or Generation(id=generation_id, status=GenerationStatus.PENDING)
            crid = from_sidecar(context, sidecar)
            return result_dict(
                pending,
                request.model,
                endpoint=api,
                usage=usage,
                client_request_id=crid,
                estimated_usd=estimate.usd,
                **self._asked(),
            )
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
            self.defer_try(
                context,
                KlingGenerationTrigger,
                end_time,
                kwargs=done,
                generation_id=generation_id,
                api=api,
                model=request.model,
                submitted_at=self._submitted_at,
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
        from airflow_provider_kling.schemas.generation import Generation, GenerationStatus

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
            estimated_usd=getattr(self, "_estimated_usd", None),
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
            of a new one is kept in ``self._submitted``). See :mod:`._reconnect` for the record.
        """
        from airflow_provider_kling.exceptions import KlingError
        from airflow_provider_kling.hooks.kling import post_may_have_created

        store = context.get("task_state_store")
        hook = self.hook
        fingerprint = request.fingerprint()
        earlier = earlier_generation(store, fingerprint, hook, request.model, self.log)
        if earlier is not None:
            stored_id, prior, submitted_at = earlier
            if submitted_at is not None:
                self._submitted_at = submitted_at
            context["ti"].xcom_push(key=GENERATION_ID_XCOM_KEY, value=stored_id)
            return stored_id, prior
        self._check_destination_free()
        self._check_max_usd()
        from airflow_provider_kling.hooks._request_id import from_context

        try:
            # The same id on every try of this request: a lost answer is found again in /v2/logs.
            submitted = hook.submit(
                request,
                client_request_id=from_context(context, fingerprint),
                estimate=getattr(self, "_estimate_of_request", None),
            )
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
            record_submission(store, submitted.id, fingerprint, hook.endpoint.api, self._submitted_at)
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

    def _estimate(self, request: KlingRequest) -> Estimate:
        """The request's estimated price, logged before anything is paid."""
        estimate = self.hook.estimate(request)
        self._estimate_of_request: Estimate | None = estimate
        self._estimated_usd: float | None = estimate.usd
        self.log.info("Kling %s: estimated %s before paying", request.model, estimate.describe())
        return estimate

    def _check_max_usd(self) -> None:
        """Refuse, before paying, a request whose estimate is above ``max_usd`` (or unknown)."""
        from airflow_provider_kling.cost.budget import check_max_usd, max_usd_cap

        cap = max_usd_cap(self.max_usd)
        if cap is not None:
            assert self._estimate_of_request is not None
            check_max_usd(cap, self._estimate_of_request, 0.0, self.kling_conn_id, "the request")

    def _plan(self, estimate: Estimate) -> dict[str, Any]:
        """dry_run: the validated request's plan (model, seconds, estimate) as XCom; nothing is paid."""
        from airflow_provider_kling.cost.budget import request_plan

        plan = request_plan(estimate, self.hook.endpoint.api, self.max_usd)
        self.log.info("dry_run: the request is valid and nothing was sent; plan: %s", plan)
        return plan

    def _check_destination_free(self) -> None:
        """Refuse, before paying, a download_to that names an existing file (unless overwrite=True)."""
        if self.download_to and not self.overwrite:
            from airflow_provider_kling.utils.storage import refuse_existing_file

            refuse_existing_file(self.download_to)

    def resume_deferral(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """As Airflow's, with a clear message when the deferral timed out (no triggerer ran the poll)."""
        try:
            return super().resume_deferral(next_method, next_kwargs, context)
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

    def execute_complete(self, context: Context, event: dict[str, Any], **done: Any) -> dict[str, Any]:
        """Resume after the trigger: validate its event, then finish or fail.

        :param done: what ``execute`` kept for the end (``api``, ``usage``, ``sidecar``,
            ``count_credits``, ``estimated_usd``: :meth:`_finish`'s keywords); read back from XCom when
            Airflow resumes with the event alone.
        """
        if done.get("api") is None:
            kept = context["ti"].xcom_pull(task_ids=self.task_id, key=RESUME_XCOM_KEY)
            if isinstance(kept, dict):
                done = {key: kept.get(key) for key in _FINISH_KEYS}
        self._generation_id = event.get("generation_id") if isinstance(event, dict) else None
        # The event holds the video URL without its signature: the generation is read once more.
        generation = generation_from_event(event, timeout_seconds(self.timeout), self.hook, done.get("api"))
        return self._finish(context, generation, **done)

    def _finish(
        self,
        context: Context,
        generation: Generation,
        *,
        api: str | None = None,
        usage: dict[str, Any] | None = None,
        sidecar: dict[str, Any] | None = None,
        count_credits: bool = False,
        estimated_usd: float | None = None,
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
        from airflow_provider_kling.hooks._request_id import from_sidecar

        result = result_dict(
            generation,
            self.model,
            video_path,
            endpoint=api,
            usage=usage,
            client_request_id=from_sidecar(context, sidecar),
            estimated_usd=estimated_usd,
            **self._asked(),
        )
        self.log.info(
            "Kling generation %s completed: %s; spent %s",
            generation.id,
            video_path or "video ready (not downloaded)",
            describe_usage(result["usage"]),
        )
        if count_credits:
            metrics.credits(generation.usage, result["model"])
        metrics.usd_spent(result["usage"], result["model"], getattr(context["ti"], "dag_id", None))
        annotate_outlets(context, self.outlets, result)
        self._result = result
        return result

    # ------------------------------------------------------------------------------ lineage
    def _lineage(self) -> Any:
        from airflow_provider_kling.lineage import task_lineage

        return task_lineage(self)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the media inputs, the downloaded video and the generation (id, model, usage)."""
        return self._lineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage on failure: the inputs, and the generation when one was submitted."""
        return self._lineage()
