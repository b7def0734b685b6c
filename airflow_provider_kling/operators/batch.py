"""The catalog-scale operator: :class:`KlingBatchVideoOperator`, one task for every row of a manifest.

Imported at every DAG parse (``operators.kling`` re-exports it): only Airflow's own bases load here.
The batch package (:mod:`airflow_provider_kling.batch`), the hook and the triggers load when a task
runs. The operator hands the batch a :class:`~airflow_provider_kling.batch.run.BatchSettings` built
from its rendered arguments; the batch package never imports the operators.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_kling.operators.base import DEFAULT_MODEL, KlingBaseVideoOperator
from airflow_provider_kling.utils.results import fail_fast, timeout_seconds

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.batch.settings import BatchSettings


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

    def batch_settings(self) -> BatchSettings:
        """The rendered arguments the batch run works from (see :class:`BatchSettings`)."""
        from airflow_provider_kling.batch import BatchSettings

        return BatchSettings(
            manifest=self.manifest,
            output_prefix=self.output_prefix,
            model=self.model,
            parameters=self.parameters,
            key_field=self.key_field,
            check_capabilities=self.check_capabilities,
            max_active=self.max_active,
            timeout_seconds=self.timeout_seconds,
            skip_existing=self.skip_existing is not False,
            resend_unknown=self.resend_unknown,
            results_name=self.results_name,
            download_concurrency=self.download_concurrency,
            submit_concurrency=self.submit_concurrency,
            presign_inputs=self.presign_inputs,
            presign_seconds=self.presign_seconds,
            max_usd=self.max_usd,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_kling.batch import BatchRun
        from airflow_provider_kling.utils.validation import check_poll_settings

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
            if self.plan_only:
                from airflow_provider_kling.cost.batch_plan import batch_plan

                return batch_plan(self.batch_settings(), self.hook, self.log)
            run = BatchRun(self.batch_settings(), context, hook=self.hook, log=self.log)
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
            run = BatchRun(self.batch_settings(), context, hook=self.hook, log=self.log, first_pass=False)
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

    def resume_deferral(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that timed out (no triggerer ran it) resumes the batch: it polls from the worker."""
        if next_method == "__fail__":
            self.log.warning(
                "The batch's deferral timed out (is a triggerer with airflow-provider-kling running?): "
                "the worker polls the batch's generations itself"
            )
            return self.execute_complete(context, None)
        return super().resume_deferral(next_method, next_kwargs, context)

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
        if summary.get("skipped_budget"):
            context["ti"].xcom_push(key="batch_summary", value=summary)
            raise AirflowFailException(run.budget.failure(summary))
        if summary["failed"]:
            from airflow_provider_kling.batch.results import describe_failures

            failed = describe_failures(run.failures)
            say = self.log.error if self.fail_on_partial_error else self.log.warning
            say("%s of %s rows failed:\n%s", summary["failed"], summary["rows"], failed)
            if self.fail_on_partial_error:
                context["ti"].xcom_push(key="batch_summary", value=summary)
                raise AirflowFailException(
                    f"{summary['failed']} of {summary['rows']} rows failed (all are in "
                    f"{summary['results']}):\n{failed}\nThe others are stored. A retry or clear pays only "
                    "for rows that were never sent (fail_on_partial_error=False succeeds with the failures "
                    "listed)."
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
        self.defer_try(run.context, KlingBatchTrigger, end_time, pending=pending, min_finished=min_finished)
