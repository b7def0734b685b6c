"""Retry policy: which failures are retried, how long to wait, when to stop, and the paid-POST rule.

A POST starts a paid generation, so it is retried only when nothing can have been created
(:func:`_created_nothing`); :func:`post_may_have_created` tells callers when sending it again,
by the hook or by an Airflow retry, could pay twice. Every wait is bounded by the call's deadline.

tenacity's ``stop_before_delay`` is not used: it would stop when the wait (already cut to the time
left) reaches the deadline, where this policy still makes the last attempt at the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingConnectionError,
    KlingDeadlineExceeded,
    KlingError,
    KlingRateLimitError,
)

T = TypeVar("T")

#: Longest Retry-After the hook will sleep for; a longer one is capped to this.
MAX_RETRY_AFTER = 300.0
#: The shortest time an attempt gets, even at (or past) a deadline, so a last poll can still answer.
_MIN_ATTEMPT_SECONDS = 1.0


def _created_nothing(exc: BaseException) -> bool:
    """True when a failed POST surely created no generation, so sending it again cannot pay twice."""
    if isinstance(exc, KlingConnectionError):
        return exc.nothing_sent and exc.retryable
    return isinstance(exc, KlingRateLimitError) or (isinstance(exc, KlingAPIError) and exc.status_code == 503)


def post_may_have_created(exc: BaseException) -> bool:
    """True when a failed POST may still have created (and charged for) a generation.

    That is a request that got no readable answer, a 5xx other than 503, or a 2xx the provider could
    not use (no id, an id it cannot poll, a body too large): the service may have accepted it.
    Sending it again, by the hook or by an Airflow retry, could pay twice.
    """
    if isinstance(exc, KlingConnectionError):
        return not exc.nothing_sent
    if isinstance(exc, KlingAPIError) and not _created_nothing(exc):
        return exc.status_code >= 500 or 200 <= exc.status_code < 300
    return False


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, KlingConnectionError):
        return exc.retryable
    return isinstance(exc, KlingAPIError) and exc.retryable


def _backoff(first: float, longest: float) -> wait_exponential_jitter:
    """Exponential backoff with jitter starting at ``first`` seconds, capped at ``longest``."""
    try:
        # Newer tenacity names the first wait ``multiplier`` and warns on ``initial`` at every call.
        return wait_exponential_jitter(multiplier=first, max=longest)
    except TypeError:  # older tenacity
        return wait_exponential_jitter(initial=first, max=longest)


class RetryPolicy:
    """The retry rules of one call; the same for the sync and async paths.

    One object holds what the call needs: which failures are retried (a POST only when nothing can
    have been created), the wait (Retry-After honoured and capped, else exponential backoff with
    jitter), when to stop (attempts, or the deadline), and whether the deadline stopped it.

    :param method: the HTTP method (``POST`` follows the paid-POST rule).
    :param attempts: attempts in all.
    :param min_wait: first backoff wait in seconds; it doubles each retry, with jitter.
    :param max_wait: longest backoff wait in seconds.
    :param deadline: a UNIX epoch float no retry may pass: every wait (backoff or Retry-After) is
        capped at the time left, and no attempt starts after it, nor when the service asks to be
        left alone until after it.
    :param log: where each retry is announced.
    """

    def __init__(
        self,
        method: str,
        *,
        attempts: int,
        min_wait: float,
        max_wait: float,
        deadline: float | None = None,
        log: Any,
    ) -> None:
        self.method = method
        self.attempts = attempts
        self.deadline = deadline
        self.log = log
        self.stopped_by_deadline = False
        self._min_wait = min_wait
        self._max_wait = max_wait
        # Built on the first retry: a trigger makes a policy per poll and nearly every poll succeeds.
        self._backoff: wait_exponential_jitter | None = None

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` may be retried by this call (the paid-POST rule for a POST)."""
        return _created_nothing(exc) if self.method == "POST" else _transient(exc)

    def _asked_wait(self, state: RetryCallState) -> float | None:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return None if retry_after is None else min(float(retry_after), MAX_RETRY_AFTER)

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: Retry-After when given, else backoff; cut to the deadline."""
        asked = self._asked_wait(state)
        if asked is not None:
            seconds = asked
        else:
            if self._backoff is None:
                self._backoff = _backoff(self._min_wait, self._max_wait)
            seconds = float(self._backoff(state))
        if self.deadline is not None:
            seconds = max(0.0, min(seconds, self.deadline - time.time()))
        return seconds

    def stop(self, state: RetryCallState) -> bool:
        """True after the last attempt, at the deadline, or when Retry-After reaches past it."""
        if state.attempt_number >= self.attempts:
            return True
        if self.deadline is None:
            return False
        left = self.deadline - time.time()
        asked = self._asked_wait(state)
        if left <= 0 or (asked is not None and asked > left):
            self.stopped_by_deadline = True
            return True
        return False

    def before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0
        self.log.warning(
            "Kling %s failed (attempt %s of %s): %s; retrying in %.1f s",
            self.method,
            state.attempt_number,
            self.attempts,
            exc,
            sleep,
        )

    def tenacity_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for tenacity's ``Retrying`` / ``AsyncRetrying``."""
        return {
            "retry": retry_if_exception(self.retryable),
            "stop": self.stop,
            "wait": self.wait,
            "before_sleep": self.before_sleep,
            "reraise": True,
        }

    def failure(self, exc: BaseException) -> BaseException:
        """The error to raise for a call that failed: a transient failure at the deadline says so."""
        deadline = self.deadline
        if deadline is not None and _transient(exc) and (self.stopped_by_deadline or time.time() >= deadline):
            return KlingDeadlineExceeded(
                f"deadline {_utc(deadline)} reached while retrying: {exc}", deadline=deadline, last_error=exc
            )
        return exc

    def reraise(self, exc: BaseException) -> NoReturn:
        """Raise what a failed call ends in: ``exc`` itself, or :meth:`failure`'s deadline error."""
        failure = self.failure(exc)
        if failure is exc:
            raise exc
        raise failure from None

    def run(self, once: Callable[[], T]) -> T:
        """Run ``once`` under this policy (the sync path).

        :param once: one attempt.
        """
        try:
            for attempt in Retrying(**self.tenacity_kwargs()):
                with attempt:
                    return once()
        except KlingError as exc:
            self.reraise(exc)
        raise AssertionError("unreachable")  # pragma: no cover

    async def arun(self, once: Callable[[], Awaitable[T]]) -> T:
        """Run ``once`` under this policy without blocking the event loop.

        Fast path: a trigger polls thousands of times and nearly every poll succeeds; a tenacity loop
        per poll leaves ~40 objects in reference cycles, and the garbage collector's full passes over a
        triggerer's heap then stall every trigger on the loop. A first failure falls through to the
        same retry rules as ever: tenacity replays it as its attempt 1.

        :param once: one attempt.
        """
        try:
            return await once()
        except Exception as exc:
            if not self.retryable(exc) or self.attempts <= 1:
                self.reraise(exc)
            first_failure: Exception | None = exc
        try:
            async for attempt in AsyncRetrying(**self.tenacity_kwargs()):
                with attempt:
                    if first_failure is not None:
                        failure, first_failure = first_failure, None
                        raise failure
                    return await once()
        except KlingError as exc:
            self.reraise(exc)
        raise AssertionError("unreachable")  # pragma: no cover


def attempt_budget(call_timeout: float, deadline: float | None) -> float:
    """Seconds one attempt may take in all: the call timeout, cut to the deadline's time left.

    :param call_timeout: the hook's wall-clock bound of one attempt.
    :param deadline: a UNIX epoch float, or None.
    """
    if deadline is None:
        return call_timeout
    return min(call_timeout, max(deadline - time.time(), _MIN_ATTEMPT_SECONDS))


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


__all__ = ["MAX_RETRY_AFTER", "RetryPolicy", "attempt_budget", "post_may_have_created"]
