"""Deferrable polling of a Kling generation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from airflow.triggers.base import BaseTrigger, TriggerEvent
from pydantic import BaseModel, field_validator

from airflow_provider_kling import metrics
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingConfigError,
    KlingConnectionError,
    KlingDeadlineExceeded,
    KlingError,
    KlingResponseTooLarge,
    redact_urls,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.schemas.generation import Generation, GenerationStatus


class KlingTriggerEvent(BaseModel):
    """The one event a :class:`KlingGenerationTrigger` yields; validated again when the task resumes.

    The triggerer logs every event and Airflow stores it with the task (``next_kwargs``), so it holds
    no signed URL: the generation's video URLs come without their query string (``?<redacted>``), on
    both sides. The resuming task reads the generation once more for the usable URL.

    :param status: ``success``, ``error`` or ``timeout``.
    :param generation_id: the generation polled.
    :param message: a readable account of what happened (URLs without their query string).
    :param generation: the last poll's view of the generation, when there was one.
    :param retryable: whether a retry of the task could succeed (False for the service's own verdicts).
    """

    status: Literal["success", "error", "timeout"]
    generation_id: str
    message: str
    generation: Generation | None = None
    retryable: bool = False

    @field_validator("message", mode="after")
    @classmethod
    def _no_signed_urls_in_message(cls, value: str) -> str:
        return redact_urls(value)

    @field_validator("generation", mode="after")
    @classmethod
    def _no_signed_video_urls(cls, value: Generation | None) -> Generation | None:
        if value is None:
            return None
        return value.model_copy(
            update={
                "video_url": redact_urls(value.video_url) if value.video_url else None,
                "video_urls": [redact_urls(url) for url in value.video_urls],
            }
        )


class KlingGenerationTrigger(BaseTrigger):
    """Poll a generation from the triggerer until it completes, fails or its deadline passes.

    Every trigger of an event loop shares one aiohttp session per connection, held for the
    trigger's whole life. Transient failures (429, 5xx, network) are retried with backoff and
    Retry-After inside the trigger, up to ``max_attempts`` in a row.

    :param generation_id: the generation to poll.
    :param kling_conn_id: the ``kling`` connection (only its id is serialized, never the key).
    :param poll_interval: seconds between polls.
    :param end_time: the deadline as a UNIX epoch float.
    :param max_attempts: consecutive failed polls tolerated before an error event.
    :param timeout: (connect, read) timeout in seconds for each poll (default: the hook's).
    :param retry_min_wait: first backoff wait in seconds between failed polls (default: the hook's).
    :param retry_max_wait: longest backoff wait in seconds (default: the hook's).
    :param api: the endpoint the generation was created on (``legacy``/``unified``; default: the
        connection's), so a generation is polled where it was made.
    :param model: the model, only to tag the metrics this trigger sends.
    :param submitted_at: when the generation was submitted (epoch), to time it to its end in metrics.

    ``end_time`` bounds everything, retries included: no wait (backoff or Retry-After) runs past it,
    and a poll still failing at it ends in a ``timeout`` event, not an ``error``. No exception leaves
    :meth:`run`: each becomes one ``error`` event that names the generation and what to do.
    """

    def __init__(
        self,
        generation_id: str,
        kling_conn_id: str = KlingHook.default_conn_name,
        poll_interval: float = 10.0,
        end_time: float | None = None,
        max_attempts: int = 8,
        timeout: tuple[float, float] | list[float] | None = None,
        retry_min_wait: float | None = None,
        retry_max_wait: float | None = None,
        api: str | None = None,
        model: str | None = None,
        submitted_at: float | None = None,
    ) -> None:
        super().__init__()
        self.generation_id = generation_id
        self.kling_conn_id = kling_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time) if end_time is not None else time.time() + 1800.0
        self.max_attempts = int(max_attempts)
        self.timeout = (float(timeout[0]), float(timeout[1])) if timeout is not None else None
        self.retry_min_wait = float(retry_min_wait) if retry_min_wait is not None else None
        self.retry_max_wait = float(retry_max_wait) if retry_max_wait is not None else None
        self.api = str(api) if api is not None else None
        self.model = model
        self.submitted_at = float(submitted_at) if submitted_at is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "generation_id": self.generation_id,
                "kling_conn_id": self.kling_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_attempts": self.max_attempts,
                "timeout": list(self.timeout) if self.timeout is not None else None,
                "retry_min_wait": self.retry_min_wait,
                "retry_max_wait": self.retry_max_wait,
                "api": self.api,
                "model": self.model,
                "submitted_at": self.submitted_at,
            },
        )

    def _event(
        self, status: str, message: str, generation: Generation | None = None, **kw: Any
    ) -> TriggerEvent:
        event = KlingTriggerEvent(
            status=status,  # type: ignore[arg-type]
            generation_id=str(self.generation_id),
            message=message,
            generation=generation,
            **kw,
        )
        return TriggerEvent(event.model_dump(mode="json"))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # One generator, not one wrapping another: the triggerer (and ``dag.test``) may abandon it
        # after the first event, and nested async generators then race to close the shared session.
        try:
            # Only the settings given are passed, so the hook's defaults stay the single source.
            settings: dict[str, Any] = {
                k: v
                for k, v in (
                    ("timeout", self.timeout),
                    ("retry_min_wait", self.retry_min_wait),
                    ("retry_max_wait", self.retry_max_wait),
                )
                if v is not None
            }
            hook = KlingHook(self.kling_conn_id, max_attempts=self.max_attempts, **settings)
            last_status: str | None = None
            started = time.monotonic()
            async with hook.async_session():
                while True:
                    generation = await hook.aget_generation(
                        self.generation_id, api=self.api, deadline=self.end_time
                    )
                    if generation.raw_status != last_status:
                        last_status = generation.raw_status
                        self.log.info(
                            "Kling generation %s is %s after %.1f s",
                            self.generation_id,
                            last_status,
                            time.monotonic() - started,
                        )
                    if generation.status is GenerationStatus.COMPLETED:
                        self._finished("completed")
                        yield self._event("success", "generation completed", generation)
                        return
                    if generation.status is GenerationStatus.FAILED:
                        self._finished("failed")
                        yield self._event("error", generation.error or "unknown error", generation)
                        return
                    remaining = self.end_time - time.time()
                    if remaining <= 0:
                        self._finished("timeout")
                        yield self._event(
                            "timeout",
                            f"still {last_status!r} at the deadline; it may still complete on the service",
                            generation,
                            retryable=True,
                        )
                        return
                    # A sleeping trigger keeps nothing of its last poll: a thousand answers held
                    # across every sleep would reach the collector's oldest generation and bring on
                    # full collections over the triggerer's whole heap.
                    del generation
                    await asyncio.sleep(min(self.poll_interval, remaining))
        except KlingDeadlineExceeded as exc:
            yield self._event(
                "timeout",
                f"no usable answer before the deadline ({redact_urls(str(exc.last_error or exc))}); "
                "it may still complete on the service",
                retryable=True,
            )
        except Exception as exc:  # the last net: nothing leaves run() without becoming an event
            yield self._event("error", self._explain(exc), retryable=self._retryable(exc))

    def _finished(self, outcome: str) -> None:
        """The triggerer saw the end: count and time it (the task does so when it waits itself)."""
        metrics.finished(outcome, self.model, self.submitted_at, time.time())

    def _retryable(self, exc: BaseException) -> bool:
        """Whether a retry of the task (which reconnects to this generation, paying nothing) may help."""
        if isinstance(exc, KlingConnectionError):
            return exc.retryable
        if isinstance(exc, KlingResponseTooLarge):
            return True
        if isinstance(exc, KlingAPIError):
            return exc.retryable
        if isinstance(exc, KlingError):
            return False
        return True  # a connection not visible here, or a bug: the retry resumes, it does not pay

    def _explain(self, exc: BaseException) -> str:
        gen = self.generation_id
        if type(exc).__name__ == "AirflowNotFoundException":
            return (
                f"connection {self.kling_conn_id!r} is not visible to the triggerer (e.g. under "
                "`airflow dags test` with a connection stored only in the metadata DB); define it in "
                "an environment variable or a secrets backend the triggerer reads, then clear the "
                f"task: the retry reconnects to generation {gen} and does not pay again"
            )
        if isinstance(exc, (KlingAPIError, KlingConnectionError, KlingConfigError)):
            return redact_urls(str(exc))
        if isinstance(exc, KlingError):
            return redact_urls(str(exc))
        return (
            f"unexpected {type(exc).__name__} while polling generation {gen}: "
            f"{redact_urls(str(exc))[:500]}; a retry of the task reconnects to generation {gen} and "
            "does not pay again"
        )

    async def cleanup(self) -> None:
        """Nothing to cancel remotely: the API has no cancel, the generation goes on and stays resumable."""
        self.log.debug("Trigger for Kling generation %s stopped", self.generation_id)

    async def on_kill(self) -> None:
        """A user marked the task failed or success, or cleared it (Airflow 3.3+ calls this).

        No route of the service cancels a generation: say so, name it, and leave its recorded id in
        place (``task_state_store``, the ``generation_id`` XCom) so a clear reconnects to it.
        """
        self.log.warning(
            "The task was stopped by a user, but Kling generation %s%s goes on at the service and is "
            "billed when it completes: no route cancels a generation. Its id stays recorded, so clearing "
            "the task reconnects to it instead of paying again (KlingGenerationSensor(generation_id=%r) "
            "waits for it too).",
            self.generation_id,
            f" ({self.model})" if self.model else "",
            self.generation_id,
        )


class KlingBatchTrigger(BaseTrigger):
    """Poll every pending generation of a batch from one trigger, over the loop's shared session.

    It reports completion only: when at least ``min_finished`` of its generations have ended (or all
    of them, or the deadline passed) it yields one small event naming which ended and how, and the
    task resumes in a worker to store the videos and submit the next rows. Video URLs, request bodies
    and presigned inputs are never part of its kwargs or its event.

    :param pending: ``[row key, generation id, endpoint]`` for each generation to watch.
    :param kling_conn_id: the ``kling`` connection (only its id is serialized).
    :param poll_interval: seconds between rounds of polls.
    :param end_time: the batch's deadline (UNIX epoch); the task's deferral timeout is a little later.
    :param min_finished: report once this many have ended (default: all of them).
    :param concurrency: most polls in flight at once.
    :param max_attempts: retries of one poll for transient failures; a poll still failing is tried
        again next round (the generation stays pending), never reported as failed.
    """

    def __init__(
        self,
        pending: list[list[str]] | list[tuple[str, str, str]],
        kling_conn_id: str = KlingHook.default_conn_name,
        poll_interval: float = 10.0,
        end_time: float | None = None,
        min_finished: int | None = None,
        concurrency: int = 32,
        max_attempts: int = 3,
    ) -> None:
        super().__init__()
        self.pending = [[str(k), str(g), str(a) if a else ""] for k, g, a in pending]
        self.kling_conn_id = kling_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time) if end_time is not None else time.time() + 86400.0
        self.min_finished = int(min_finished) if min_finished else len(self.pending)
        self.concurrency = max(1, int(concurrency))
        self.max_attempts = int(max_attempts)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pending": self.pending,
                "kling_conn_id": self.kling_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "min_finished": self.min_finished,
                "concurrency": self.concurrency,
                "max_attempts": self.max_attempts,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # One generator (as KlingGenerationTrigger): the triggerer may abandon it after its event.
        from airflow_provider_kling.exceptions import KlingNotFoundError

        finished: dict[str, list[Any]] = {}
        waiting = {key: (gid, api or None) for key, gid, api in self.pending}
        try:
            hook = KlingHook(self.kling_conn_id, max_attempts=self.max_attempts)
            gate = asyncio.Semaphore(self.concurrency)
            target = min(self.min_finished, len(waiting))

            async def poll(key: str, gid: str, api: str | None) -> None:
                async with gate:
                    try:
                        generation = await hook.aget_generation(gid, api=api, deadline=self.end_time)
                    except KlingDeadlineExceeded:
                        return
                    except KlingNotFoundError as exc:
                        finished[key] = ["failed", redact_urls(str(exc))[:300]]
                        return
                    except KlingError:
                        return  # transient after its retries: stays pending, polled next round
                if generation.status is GenerationStatus.COMPLETED:
                    finished[key] = ["completed", None]
                elif generation.status is GenerationStatus.FAILED:
                    finished[key] = ["failed", (generation.error or str(generation.raw_status))[:300]]

            started = time.monotonic()
            async with hook.async_session():
                while True:
                    todo = [(k, g, a) for k, (g, a) in waiting.items() if k not in finished]
                    await asyncio.gather(*(poll(k, g, a) for k, g, a in todo))
                    done = len(finished)
                    if done >= target or done == len(waiting):
                        self.log.info(
                            "%s of %s batch generation(s) ended after %.1f s",
                            done,
                            len(waiting),
                            time.monotonic() - started,
                        )
                        yield TriggerEvent(
                            {"status": "success", "finished": finished, "polled": len(waiting)}
                        )
                        return
                    remaining = self.end_time - time.time()
                    if remaining <= 0:
                        yield TriggerEvent(
                            {"status": "timeout", "finished": finished, "polled": len(waiting)}
                        )
                        return
                    await asyncio.sleep(min(self.poll_interval, remaining))
        except Exception as exc:  # nothing leaves run() without becoming an event
            yield TriggerEvent(
                {
                    "status": "error",
                    "message": redact_urls(f"{type(exc).__name__}: {exc}")[:500],
                    "finished": finished,
                    "polled": len(waiting),
                }
            )

    async def cleanup(self) -> None:
        """The generations go on at the service; the task's state still holds every id."""
        self.log.debug("Batch trigger for %s generation(s) stopped", len(self.pending))

    async def on_kill(self) -> None:
        """A user marked the batch task failed or success, or cleared it (Airflow 3.3+ calls this).

        No route cancels a generation: the ones in flight go on and are billed. The batch's state keeps
        every id, so a clear reconnects to them and stores their videos without paying again.
        """
        shown = ", ".join(f"{key}={gid}" for key, gid, _api in self.pending[:20])
        self.log.warning(
            "The batch task was stopped by a user, but its %s generation(s) in flight go on at the service "
            "and are billed when they complete: no route cancels a generation. Their ids stay in the "
            "batch's state, so clearing the task reconnects to them instead of paying again: %s%s",
            len(self.pending),
            shown,
            " ..." if len(self.pending) > 20 else "",
        )
