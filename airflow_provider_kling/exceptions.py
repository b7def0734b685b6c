"""Errors raised by the Kling provider.

Every error carries what a user needs to act on it (field, status code, the service's message and
requestId, the generation id) and never the API key, nor the credentials of a URL: the service may
echo a presigned input URL in its error text, and errors end up in logs, XComs and batch results.
"""

from __future__ import annotations

import re

from airflow.providers.common.compat.sdk import AirflowException

# Signed URLs carry their credential in the query string, and a URL's user information may hold a
# password: neither is ever shown, in any message. A URL starts at a scheme (``https://``, ``s3://``)
# or at a path's slash; its query string runs to the next space, quote or bracket.
_URL_QUERY_RE = re.compile(
    r"((?:[a-z][a-z0-9+.-]*://|url: |/)[^\s?#'\"<>()]*)\?(?!<redacted>)[^\s'\"<>()]*", re.IGNORECASE
)
# The same URL percent-encoded (echoed as a query parameter of another URL): ``https%3A%2F%2F...%3F...``.
_ENCODED_QUERY_RE = re.compile(
    r"((?:[a-z][a-z0-9+.-]*%3A%2F%2F|%2F)[^\s'\"<>()?]*?)%3F(?!<redacted>)[^\s'\"<>()]*", re.IGNORECASE
)
_URL_USERINFO_RE = re.compile(r"([a-z][a-z0-9+.-]*://)[^\s/?#'\"<>()@]*@", re.IGNORECASE)


def redact_urls(text: str) -> str:
    """``text`` with every URL's query string replaced by ``?<redacted>`` and its user information by
    ``<redacted>@``: what signs a presigned URL (``X-Amz-Signature=...``) is never shown.

    :param text: any message, e.g. an error text the service sent; redacting twice changes nothing.
    """
    text = _URL_USERINFO_RE.sub(r"\1<redacted>@", text)
    text = _ENCODED_QUERY_RE.sub(r"\1%3F<redacted>", text)
    return _URL_QUERY_RE.sub(r"\1?<redacted>", text)


def _redacted(text: str | None) -> str | None:
    return None if text is None else redact_urls(str(text))


class KlingError(AirflowException):
    """Base class of every error raised by the Kling provider."""


class KlingConfigError(KlingError, ValueError):
    """The ``kling`` connection or an argument is unusable (missing key, non-https host, bad value)."""


class KlingValidationError(KlingConfigError):
    """A generation request or argument failed validation before anything was sent.

    :param errors: one ``(field, message)`` pair per problem found.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        lines = "\n".join(f"  - {field}: {message}" for field, message in errors)
        noun = "problem" if len(errors) == 1 else "problems"
        super().__init__(f"Invalid Kling request ({len(errors)} {noun}), nothing was sent:\n{lines}")


class KlingConnectionError(KlingError):
    """The service could not be reached (refused, reset, timed out) after the allowed retries.

    :param nothing_sent: True when the request surely never reached the service (refused connect,
        failed TLS handshake).
    """

    #: Whether trying the same call again could help (False for a refused certificate).
    retryable = True

    def __init__(self, message: str, *, nothing_sent: bool = False) -> None:
        self.nothing_sent = nothing_sent
        super().__init__(redact_urls(message))


class KlingTLSError(KlingConnectionError):
    """The TLS handshake failed (bad certificate, or a host that does not speak TLS): nothing was sent.

    Not retried: a certificate or a scheme does not fix itself between two attempts.
    """

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message, nothing_sent=True)


class KlingDeadlineExceeded(KlingError):
    """A call's deadline passed while its transient failures were being retried.

    :param deadline: the deadline, a UNIX epoch float.
    :param last_error: the last failure seen.
    """

    def __init__(self, message: str, *, deadline: float, last_error: BaseException | None = None) -> None:
        self.deadline = deadline
        self.last_error = last_error
        super().__init__(message)


class KlingAPIError(KlingError):
    """The service answered with an HTTP error, or with a body that cannot be read.

    Every URL in the message, path, requestId and hint is kept without its query string and user
    information (see :func:`redact_urls`).

    :param status_code: the HTTP status code.
    :param message: the service's own message.
    :param request_id: the service's ``requestId``, when it sent one.
    :param method: HTTP method of the failed call.
    :param path: path of the failed call.
    """

    retryable = False

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        request_id: str | None = None,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        message = redact_urls(str(message))
        request_id = _redacted(request_id)
        path = redact_urls(path)
        hint = _redacted(hint)
        self.status_code = status_code  # type: ignore[assignment]
        self.message = message
        self.request_id = request_id
        self.method = method
        self.path = path
        self.retry_after = retry_after
        self.hint = hint
        text = f"Kling API {method} {path} answered {status_code}: {message}".replace("  ", " ")
        if request_id:
            text += f" (requestId {request_id})"
        if hint:
            text += f". {hint}"
        super().__init__(text)


class KlingBadRequestError(KlingAPIError):
    """400: the service rejected the request body."""


class KlingAuthError(KlingAPIError):
    """401: the API key was refused."""


class KlingForbiddenError(KlingAPIError):
    """403: no credits left, or no access to the model."""


class KlingNotFoundError(KlingAPIError):
    """404: unknown generation id or path."""


class KlingRateLimitError(KlingAPIError):
    """429: rate or concurrency limit reached."""

    retryable = True


class KlingServerError(KlingAPIError):
    """5xx, or a 2xx whose body is not the JSON the service documents."""

    retryable = True


class KlingResponseTooLarge(KlingAPIError):
    """The service answered a body larger than the provider reads (``MAX_RESPONSE_BYTES``).

    Not retried inside the call (the same answer would come again); the task fails normally, and an
    Airflow retry reconnects to the generation.
    """


class KlingUnusableIdError(KlingAPIError):
    """The service accepted a paid POST but answered an id the provider cannot poll.

    Unlike :class:`KlingValidationError` something *was* sent: the generation may exist and be billed.

    :param generation_id: the id as the service answered it.
    """

    def __init__(self, generation_id: str, problem: str, *, method: str = "POST", path: str = "") -> None:
        self.generation_id = generation_id
        shown = generation_id if len(generation_id) <= 300 else generation_id[:300] + "..."
        super().__init__(
            200,
            f"the service accepted the generation (it may be billed) but answered the id {shown!r}, "
            f"which the provider cannot poll: {problem}. Look the generation up on the service's "
            "dashboard; do not resubmit blindly",
            method=method,
            path=path,
        )


class KlingGenerationFailed(KlingError):
    """The service ended the generation in ``error``.

    :param generation_id: the generation's id.
    :param message: the service's readable reason (URLs without their query string).
    """

    def __init__(self, generation_id: str, message: str) -> None:
        message = redact_urls(str(message))
        self.generation_id = generation_id
        self.message = message
        super().__init__(f"Kling generation {generation_id} failed: {message}")


class KlingGenerationTimeout(KlingError):
    """The generation did not finish before the deadline (it may still finish on the service)."""

    def __init__(self, generation_id: str, timeout: float, last_status: str) -> None:
        self.generation_id = generation_id
        self.timeout = timeout
        self.last_status = last_status
        super().__init__(
            f"Kling generation {generation_id} still {last_status!r} after {timeout:.0f} s; "
            "it may still complete on the service"
        )


class KlingDownloadError(KlingError):
    """A video download was incomplete or did not match its announced size; nothing was kept."""


class KlingOutOfCreditsError(KlingForbiddenError):
    """403 for money: the key ran out of credits or reached its spending limit. Never retried.

    :param conn_id: the connection whose key was refused.
    :param limit: the limit that applies, as a person reads it (e.g. the key's spending limit).
    """

    def __init__(self, conn_id: str, limit: str, exc: KlingAPIError) -> None:
        self.conn_id = conn_id
        self.limit = limit
        super().__init__(
            exc.status_code,
            exc.message,
            request_id=exc.request_id,
            method=exc.method,
            path=exc.path,
            hint=(
                f"The API key of connection {conn_id!r} was refused for this call: the service refused the "
                f"generation for money ({limit}); nothing was created and it is not retried: top up the "
                "balance or raise the key's limit first"
            ),
        )


class KlingBudgetError(KlingError):
    """A cost cap stopped a request before its POST: nothing was sent or paid for it. Never retried."""

    retryable = False


class KlingBudgetExceeded(KlingBudgetError):
    """The request's estimate would cross a cap (``max_usd`` or the connection's ``daily_usd_cap``).

    :param cap_name: the cap, e.g. ``max_usd`` or ``connection 'kling_default' daily_usd_cap``.
    :param cap: the cap in USD.
    :param estimate: the request's estimate in USD.
    :param spent: what was already spent or committed against the cap, in USD.
    :param what: what was stopped, e.g. ``the request`` or ``row 'cat-12'``.
    """

    def __init__(self, cap_name: str, cap: float, estimate: float, spent: float, what: str = "the request"):
        self.cap_name = cap_name
        self.cap = cap
        self.estimate = estimate
        self.spent = spent
        super().__init__(
            f"{cap_name} of ${cap:.4f} would be crossed: {what} is estimated at ${estimate:.4f} and "
            f"${spent:.4f} is already spent or in flight (${spent + estimate:.4f} in all); it was not sent"
        )


class KlingBudgetUnknown(KlingBudgetError):
    """A cap is set but the price or the spend it needs cannot be read: fail closed, before any POST."""
