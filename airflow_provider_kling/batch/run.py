"""One run of a batch in the worker (:class:`BatchRun`): reconcile what the trigger reported, download
finished videos (bounded concurrency), submit new rows up to ``max_active`` in flight, then defer
again or write the results manifest.

The run is driven by :class:`~airflow_provider_kling.operators.batch.KlingBatchVideoOperator`, which
hands it a :class:`BatchSettings` (this package never imports the operators). Loaded only when a
batch task runs (never at DAG parse).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.batch.manifest import Row, open_path
from airflow_provider_kling.batch.results import results_row
from airflow_provider_kling.batch.settings import BatchSettings
from airflow_provider_kling.batch.state import (
    COMPLETED,
    DONE,
    FAILED,
    LEASE_GRACE,
    REUSED,
    SENDING,
    SUBMITTED,
    UNKNOWN,
    BatchLease,
    BatchState,
    write_jsonl,
)
from airflow_provider_kling.batch.validation import check_manifest_once, load_rows
from airflow_provider_kling.cost.budget import SKIPPED_BUDGET, BatchBudget
from airflow_provider_kling.exceptions import (
    KlingBudgetExceeded,
    KlingBudgetUnknown,
    KlingError,
    KlingValidationError,
    redact_urls,
)
from airflow_provider_kling.utils.storage import write_atomic

if TYPE_CHECKING:  # utils.inputs is loaded only when a pass resolves media
    from airflow_provider_kling.utils.inputs import StagedFiles


# ------------------------------------------------------------------------------------ the run
@dataclass
class Outcome:
    """What one pass of the batch loop left to do."""

    pending: list[list[str]] = field(default_factory=list)  # [key, generation id, api] at the service
    waiting: int = 0  # rows not yet submitted
    backoff: float = 0.0  # seconds to wait before submitting again (429)


class BatchRun:
    """One execution (or resumption) of a batch task in the worker.

    :param settings: the batch task's arguments (built by ``KlingBatchVideoOperator``).
    :param context: the task's context.
    :param hook: the task's :class:`~airflow_provider_kling.hooks.kling.KlingHook`.
    :param log: the task's logger.
    :param first_pass: the try's first pass in the worker (``execute``): every row's file inputs are
        checked up front (unless an earlier try checked this same manifest with the same settings) and,
        with ``resend_unknown``, rows left ``unknown`` are sent again. Resumptions after a deferral do
        neither.
    """

    def __init__(
        self, settings: BatchSettings, context: Any, *, hook: Any, log: Any, first_pass: bool = True
    ) -> None:
        self.settings = settings
        self.context = context
        self.log = log
        self.hook = hook
        self.prefix = open_path(_folder(settings.output_prefix))
        ti = context["ti"]
        #: The task instance writing the batch, recorded in its sidecars (what the gallery checks).
        self.identity = {
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "run_id": context.get("run_id") or getattr(ti, "run_id", None),
            "map_index": getattr(ti, "map_index", -1),
        }
        #: (row key, error) of every failed row, filled by :meth:`finish`.
        self.failures: list[tuple[str, str]] = []
        self.api = self.hook.endpoint.api
        # The meta record first: one that cannot be read stops the batch before anything is sent.
        self.state = BatchState(context, self.prefix)
        meta = self.state.meta
        known, checked_with = check_manifest_once(
            settings, meta.get("manifest"), log, announce=first_pass, hook=hook
        )
        meta["manifest"] = known
        self.state.stamp = f"{known['sha256'][:16]}.{checked_with[:16]}"
        self.rows = load_rows(
            settings.manifest,
            model=settings.model,
            parameters=settings.parameters,
            key_field=settings.key_field,
            check_capabilities=settings.check_capabilities,
        )
        self.by_key = {row.key: row for row in self.rows}
        # Estimated (and logged) before the first POST; an unknown price with a cap set stops here.
        self.budget = BatchBudget(hook, self.rows, settings.max_usd, log, announce=first_pass)
        self.state.load([row.key for row in self.rows])
        for row in self.rows:  # a row whose record was written for this manifest keeps its spec
            record = self.state.rows.get(row.key)
            if record is not None and record.get("m") == self.state.stamp and record.get("spec"):
                row.spec = record["spec"]
        try_number = str(getattr(context["ti"], "try_number", 1))
        again = self.state.settle_interrupted(resend=bool(settings.resend_unknown) and first_pass)
        if again:
            self.log.warning(
                "resend_unknown: sending %s row(s) again whose earlier POST may have created a generation "
                "whose id never came back; each of them may be paid twice: %s",
                len(again),
                ", ".join(again[:20]) + (" ..." if len(again) > 20 else ""),
            )
        if meta.get("try") != try_number:
            # A new try (a retry or a clear): rows that failed get another chance; rows whose POST may
            # have created a generation (UNKNOWN) are kept, unless resend_unknown (above).
            for key in [k for k, r in self.state.rows.items() if r.get("st") in (FAILED, SKIPPED_BUDGET)]:
                self.state.forget(key)
            meta["try"] = try_number
            meta["posts"] = 0
            meta["reused"] = 0
            meta["started"] = time.time()
        if not meta.get("deadline") or meta.get("deadline_try") != try_number:
            meta["deadline"] = time.time() + settings.timeout_seconds
            meta["deadline_try"] = try_number
        # Before anything is sent: no other run may be writing (and paying for) this prefix.
        self.lease = BatchLease(self.prefix, context)
        self.lease.acquire(float(meta["deadline"]) + LEASE_GRACE)
        # The window: max_active, narrowed by a 429 to what is in flight, widened again after.
        self._ceiling = max(1, int(settings.max_active))
        self._limit = self._ceiling
        self._retry_after = 5.0
        self._reconciler: Any = None
        self._staged: StagedFiles = {}  # local files staged by this pass, once each

    # -------------------------------------------------------------- helpers
    def video_path(self, key: str) -> Any:
        return self.prefix / f"{key}.mp4"

    def _record(self, key: str) -> dict[str, Any] | None:
        """The row's state record, when it belongs to the row as it is written now."""
        record = self.state.rows.get(key)
        if record is None or record.get("spec") != self.by_key[key].spec:
            return None
        return record

    def client_request_id(self, row: Row) -> str:
        """The ``X-Client-Request-Id`` of a row's POST: its task, run, key and request, never the try."""
        from airflow_provider_kling.hooks._request_id import from_context

        return from_context(self.context, row.spec, row_key=row.key)

    def in_flight(self) -> list[list[str]]:
        out = []
        for row in self.rows:
            record = self._record(row.key)
            if record is not None and record.get("st") == SUBMITTED:
                out.append([row.key, record["id"], record.get("api") or self.api])
        return out

    def unsubmitted(self) -> list[Row]:
        return [row for row in self.rows if self._record(row.key) is None]

    # -------------------------------------------------------------- one pass
    def step(self, finished: dict[str, Any] | None = None) -> Outcome:
        """Apply what the trigger reported, submit up to the limit, store finished videos."""
        if finished:
            self._apply_finished(finished)
        # Rows whose POST answer was lost: found in /v2/logs they are in flight, else sent again later.
        looking, look_again = self._resolve_unknown()
        # Refill the service's window first, then store what finished while the new ones run.
        backoff = self._submit()
        self._store_completed()
        self.state.flush()
        waiting = len(self.unsubmitted()) + looking
        return Outcome(pending=self.in_flight(), waiting=waiting, backoff=max(backoff, look_again))

    def _resolve_unknown(self) -> tuple[int, float]:
        """Look the ``unknown`` rows up in ``/v2/logs``: rows still looked for, seconds to the next look."""
        if self._reconciler is None:
            from airflow_provider_kling.batch.reconcile import UnknownRows

            self._reconciler = UnknownRows(self.hook, self.log)
        unknown = [(row, record) for row in self.rows if (record := self._record(row.key)) is not None]
        return self._reconciler.settle(self.state, unknown, self.api)

    def _apply_finished(self, finished: dict[str, Any]) -> None:
        for key, verdict in finished.items():
            record = self._record(key) if key in self.by_key else None
            if record is None or record.get("st") != SUBMITTED:
                continue
            status, message = [*verdict, None][:2] if isinstance(verdict, list) else (verdict, None)
            if status == "completed":
                self.state.update(key, st=COMPLETED)
            else:
                self.state.update(key, st=FAILED, error=str(message or "the service ended it in error"))

    def poll_in_flight(self) -> None:
        """Poll every in-flight generation once from the worker (non-deferrable mode)."""
        from airflow_provider_kling.exceptions import KlingError
        from airflow_provider_kling.schemas.generation import GenerationStatus

        pending = self.in_flight()

        def poll(item: list[str]) -> tuple[str, Any]:
            key, gid, api = item
            try:
                return key, self.hook.get_generation(gid, api=api, deadline=self.state.meta["deadline"])
            except KlingError as exc:
                return key, exc

        finished: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(pending)))) as pool:
            for key, answer in pool.map(poll, pending):
                if isinstance(answer, Exception):
                    if not getattr(answer, "retryable", True):
                        finished[key] = ["failed", str(answer)]
                    continue
                if answer.status is GenerationStatus.COMPLETED:
                    finished[key] = ["completed", None]
                elif answer.status is GenerationStatus.FAILED:
                    finished[key] = ["failed", answer.error or answer.raw_status]
        self._apply_finished(finished)

    def _store_completed(self) -> None:
        """Download every completed generation to ``<prefix>/<key>.mp4`` with its sidecar."""
        from airflow_provider_kling.exceptions import KlingError
        from airflow_provider_kling.utils.artifacts import download

        todo = [
            row.key
            for row in self.rows
            if (record := self._record(row.key)) is not None and record.get("st") == COMPLETED
        ]
        if not todo:
            return

        def store(key: str) -> tuple[str, dict[str, Any]]:
            record = dict(self.state.rows[key])
            try:
                generation = self.hook.get_generation(record["id"], api=record.get("api"))
                if not generation.video_url:
                    raise KlingError(f"generation {generation.id} is completed but has no video URL yet")
                sidecar = {
                    "model": self.by_key[key].model,
                    "request": record.get("request"),
                    "api": record.get("api"),
                    "base_url": self.hook.endpoint.base_url,
                    "row_key": key,
                    # The gallery streams a batch row only when its sidecar names the row's DAG.
                    **self.identity,
                }
                path = download(self.hook, generation, self.video_path(key), True, sidecar=sidecar)
                size = generation.file_size
                if size is None:
                    size = open_path(path).stat().st_size
                usage = {**(record.get("usage") or {}), **generation.usage}
                from airflow_provider_kling import metrics

                metrics.usd_spent(usage, self.by_key[key].model, getattr(self.context["ti"], "dag_id", None))
                # The service's URL without its signature: a results file never holds a signed URL.
                url = redact_urls(generation.video_url)
                values = {"st": DONE, "video": str(path), "size": size, "usage": usage, "url": url}
                return key, {**values, "error": None}
            except Exception as exc:
                # Kept as completed: a later pass or a retry of the task downloads it, paying nothing.
                return key, {"error": f"download failed: {type(exc).__name__}: {exc}"}

        with ThreadPoolExecutor(
            max_workers=max(1, min(self.settings.download_concurrency, len(todo)))
        ) as pool:
            for key, values in pool.map(store, todo):
                self.state.update(key, **values)
        failed = sum(1 for key in todo if self.state.rows[key].get("st") == COMPLETED)
        self.log.info(
            "Stored %s finished video(s) under %s%s",
            len(todo) - failed,
            self.prefix,
            f"; {failed} download(s) failed and will be tried again" if failed else "",
        )

    def _reuse(self, row: Row, fingerprint: str) -> dict[str, Any] | None:
        """The video already under the prefix for this row, when made from the same request."""
        from airflow_provider_kling.utils.artifacts import read_sidecar, sidecar_reusable

        video = self.video_path(row.key)
        record = read_sidecar(video)
        base_url = self.hook.endpoint.base_url
        if record is None or not sidecar_reusable(record, fingerprint, base_url, video=video, log=self.log):
            return None
        try:
            size = video.stat().st_size
        except Exception:
            return None
        if size != record.get("file_size"):
            return None
        usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
        return {
            "st": REUSED,
            "id": record.get("generation_id"),
            "video": str(video),
            "size": size,
            "usage": usage,
            "request": fingerprint,
            "error": None,
        }

    def _sendable(self, row: Row) -> Any:
        """The row's request as it is sent: media inputs resolved (local files staged once by content,
        objects presigned, upstream results), image files read or presigned; its fingerprint counts
        each input by what it is (content hash, object and ETag, generation id), never a signed URL.
        Runs in the submit threads, before the row's POST."""
        from airflow_provider_kling.schemas.file_inputs import resolve_file_inputs
        from airflow_provider_kling.schemas.request import build_request
        from airflow_provider_kling.utils.inputs import resolve_media_inputs

        request = row.request
        written = row.media_fields
        inputs = None
        if written is not None:
            inputs = resolve_media_inputs(
                written, self.hook, presign_seconds=self.settings.presign_seconds, staged=self._staged
            )
            request = build_request(inputs.fields, check_capabilities=self.settings.check_capabilities)
        request = resolve_file_inputs(
            request, presign=self.settings.presign_inputs, presign_seconds=self.settings.presign_seconds
        )
        return request if inputs is None else inputs.stabilize(request)

    def _submit(self) -> float:
        """Submit rows until ``max_active`` generations are in flight; return a backoff after a 429."""
        waiting = self.unsubmitted()
        free = self._limit - len(self.in_flight())
        if not waiting or free <= 0:
            return 0.0
        backoff = 0.0
        stop = threading.Event()
        meta = self.state.meta
        self.budget.start_pass({row.key: self._record(row.key) for row in self.rows})

        def prepare(row: Row) -> tuple[Row, Any, str | None, dict[str, Any] | None]:
            """Resolve inputs, check skip_existing, POST: (row, generation or error, hash, reuse)."""
            if stop.is_set():
                return row, None, None, None
            try:
                request = self._sendable(row)
            except Exception as exc:
                # Not sent: a file that cannot be read or staged fails this row only (a retry of the
                # task tries it again); the service's own errors (reading an upstream generation) are
                # taken as a POST's would be.
                if not isinstance(exc, KlingError):
                    exc = KlingValidationError([("media inputs", f"{type(exc).__name__}: {exc}")])
                return row, exc, None, None
            fingerprint = request.fingerprint()
            if self.settings.skip_existing:
                found = self._reuse(row, fingerprint)
                if found is not None:
                    return row, None, fingerprint, found
            if stop.is_set():
                return row, None, None, None
            try:
                crid = self.client_request_id(row)
                generation = self.hook.submit(
                    request, client_request_id=crid, reconcile=False, estimate=self.budget.take(row.key)
                )
                return row, generation, fingerprint, None
            except Exception as exc:
                return row, exc, fingerprint, None

        submitted = reused = failed = 0
        # Rows answered by reuse do not take a slot: keep feeding until the slots are full.
        queue = iter(waiting)
        active = 0
        threads = max(1, min(self.settings.submit_concurrency, free))
        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures: set[Any] = set()

            def feed(paid: dict[str, dict[str, Any]]) -> None:
                """Record what was paid and the rows about to be sent (one write), then send them."""
                batch: list[Row] = []
                # Only as many rows as there are threads are queued (and marked) at a time.
                while (
                    active + len(futures) + len(batch) < free
                    and len(futures) + len(batch) < threads
                    and not stop.is_set()
                ):
                    row = next(queue, None)
                    if row is None:
                        break
                    batch.append(row)
                # A row is marked as being sent before its POST: a worker killed while POSTs are in
                # flight leaves those rows marked, and they are never sent again (see UNKNOWN).
                intents = {
                    row.key: {
                        "spec": row.spec,
                        "st": SENDING,
                        "error": None,
                        "crid": self.client_request_id(row),
                        "sent": time.time(),
                    }
                    for row in batch
                }
                if paid or intents:
                    self.state.save_rows({**paid, **intents})
                for row in batch:
                    futures.add(pool.submit(prepare, row))

            feed({})
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                futures.difference_update(finished)
                paid: dict[str, dict[str, Any]] = {}
                for done in finished:
                    row, answer, fingerprint, found = done.result()
                    outcome = self._one_answer(row, answer, fingerprint, found, paid, stop)
                    if outcome == "submitted":
                        submitted += 1
                        active += 1
                    elif outcome == "reused":
                        reused += 1
                    elif outcome in ("failed", SKIPPED_BUDGET):
                        failed += 1
                    elif outcome == "slow_down":
                        self._limit = max(1, len(self.in_flight()) + active)
                        backoff = max(backoff, self._retry_after)
                # The paid ids are recorded before anything else: a crash after this pays nothing twice.
                feed(paid)
        if submitted and not backoff and self._limit < self._ceiling:
            # A round the service took without a 429: widen the window by what it took.
            self._limit = min(self._ceiling, self._limit + submitted)
        meta["posts"] = int(meta.get("posts") or 0) + submitted
        meta["reused"] = int(meta.get("reused") or 0) + reused
        if submitted or reused or failed:
            from airflow_provider_kling import metrics

            if submitted:
                metrics.incr(metrics.SUBMITTED, self.settings.model, count=submitted)
            if reused:
                metrics.incr(metrics.REUSED, self.settings.model, count=reused)
            self.log.info(
                "Submitted %s generation(s), reused %s existing video(s), %s row(s) failed to send; "
                "%s in flight, %s rows still to submit%s",
                submitted,
                reused,
                failed,
                len(self.in_flight()),
                len(self.unsubmitted()),
                f"; the service asked to slow down: waiting {backoff:.0f} s" if backoff else "",
            )
        return backoff

    def _one_answer(
        self,
        row: Row,
        answer: Any,
        fingerprint: str | None,
        found: dict[str, Any] | None,
        paid: dict[str, dict[str, Any]],
        stop: threading.Event,
    ) -> str:
        """Take one row's submit outcome into the state (paid ids into ``paid``, written by the caller)."""
        from airflow_provider_kling.exceptions import KlingAuthError, KlingConfigError, KlingForbiddenError
        from airflow_provider_kling.hooks.kling import _created_nothing, post_may_have_created

        if found is not None:
            self.state.update(row.key, spec=row.spec, **found)
            return "reused"
        if answer is None:
            self.state.forget(row.key)
            return "skipped"  # not sent: a stop came first
        if not isinstance(answer, Exception):
            paid[row.key] = {
                "spec": row.spec,
                "st": SUBMITTED,
                "id": answer.id,
                "api": self.api,
                "request": fingerprint,
                "usage": dict(answer.usage),
                "error": None,
                "crid": self.client_request_id(row),
            }
            return "submitted"
        exc = answer
        if isinstance(exc, KlingBudgetExceeded):  # not sent: it would cross a cap
            self.state.update(row.key, spec=row.spec, st=SKIPPED_BUDGET, request=fingerprint, error=str(exc))
            return SKIPPED_BUDGET
        if isinstance(exc, KlingBudgetUnknown):
            self.state.forget(row.key)  # not sent
        if isinstance(exc, (KlingAuthError, KlingForbiddenError, KlingBudgetUnknown)) or (
            isinstance(exc, KlingConfigError) and not isinstance(exc, KlingValidationError)
        ):
            stop.set()
            raise exc
        if _created_nothing(exc):
            # The service's concurrency limit (429/503) or no connection: slow down, never fail the row.
            stop.set()
            self.state.forget(row.key)
            self._retry_after = float(getattr(exc, "retry_after", None) or 5.0)
            return "slow_down"
        if post_may_have_created(exc):
            paid[row.key] = {
                "spec": row.spec,
                "st": UNKNOWN,
                "request": fingerprint,
                "error": (
                    f"the POST failed in a way that may have created a paid generation ({exc}); not sent "
                    "again, so nothing is paid twice: check the service's dashboard (a clear with "
                    "resend_unknown=True sends it again)"
                ),
            }
            return "failed"
        self.state.update(row.key, spec=row.spec, st=FAILED, request=fingerprint, error=str(exc))
        return "failed"

    # -------------------------------------------------------------- the end
    def time_left(self) -> float:
        return float(self.state.meta["deadline"]) - time.time()

    def expire_in_flight(self, reason: str) -> None:
        for key, _gid, _api in self.in_flight():
            self.state.update(key, st=FAILED, error=reason)

    def finish(self) -> dict[str, Any]:
        """Write the results manifest next to the videos; return the small XCom summary."""
        lines = []
        self.failures = []
        counts = {DONE: 0, REUSED: 0, FAILED: 0, UNKNOWN: 0, SKIPPED_BUDGET: 0}
        credits = tokens = 0.0
        usd = 0.0
        for row in self.rows:
            record = self._record(row.key) or {}
            line, status = results_row(row, record)
            counts[status] = counts.get(status, 0) + 1
            if status != REUSED:
                usage = record.get("usage") or {}
                credits += float(usage.get("credits_used") or 0)
                tokens += float(usage.get("tokens_used") or 0)
                usd += float(usage.get("usd_spent") or 0)
            if line["error"] is not None:
                self.failures.append((row.key, line["error"]))
            line["estimated_usd"] = self.budget.estimates[row.key].usd
            if status == SKIPPED_BUDGET:
                line["error"] = record.get("error")
            lines.append(line)
        results = self.prefix / self.settings.results_name
        write_jsonl(results, lines)
        # Beside the results, which task wrote them: the gallery lists a batch's rows only when this
        # names the DAG whose result points at them.
        write_atomic(
            results.parent / f"{results.name}.kling.json",
            json.dumps({"kind": "batch_results", **self.identity}).encode(),
        )
        meta = self.state.meta
        usage_total = {
            k: v
            for k, v in (
                ("credits_used", int(credits)),
                ("tokens_used", int(tokens)),
                ("usd_spent", round(usd, 4)),
            )
            if v
        }
        summary = {
            "results": str(results),
            "output_prefix": str(self.prefix),
            "rows": len(self.rows),
            "completed": counts[DONE] + counts[REUSED],
            "failed": counts[FAILED] + counts[UNKNOWN],
            "unknown": counts[UNKNOWN],
            "reused": counts[REUSED],
            SKIPPED_BUDGET: counts[SKIPPED_BUDGET],
            "skipped_budget_usd": round(
                sum(
                    self.budget.estimates[row.key].usd or 0.0
                    for row, line in zip(self.rows, lines, strict=True)
                    if line["status"] == SKIPPED_BUDGET
                ),
                6,
            ),
            "estimated_usd": self.budget.total,
            "posts": int(meta.get("posts") or 0),
            "usage": usage_total,
            "state": self.state.where if self.state.store is None else "task_state_store",
        }
        self.state.flush()
        self.lease.release()
        return summary


def _folder(prefix: Any) -> Any:
    """The output prefix as a folder (a trailing separator is implied)."""
    if hasattr(prefix, "fs"):
        return prefix
    return str(prefix).rstrip("/")
