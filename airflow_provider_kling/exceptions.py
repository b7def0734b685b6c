"""Errors raised by the Kling provider.

Every error carries what a user needs to act on it (field, status code, the service's message and
requestId, the generation id) and never the API key.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException


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

    :param nothing_sent: True when the request surely never reached the service (refused connect).
    """

    def __init__(self, message: str, *, nothing_sent: bool = False) -> None:
        self.nothing_sent = nothing_sent
        super().__init__(message)


class KlingAPIError(KlingError):
    """The service answered with an HTTP error, or with a body that cannot be read.

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
    ) -> None:
        self.status_code = status_code  # type: ignore[assignment]
        self.message = message
        self.request_id = request_id
        self.method = method
        self.path = path
        self.retry_after = retry_after
        text = f"Kling API {method} {path} answered {status_code}: {message}".replace("  ", " ")
        if request_id:
            text += f" (requestId {request_id})"
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


class KlingGenerationFailed(KlingError):
    """The service ended the generation in ``error``.

    :param generation_id: the generation's id.
    :param message: the service's readable reason.
    """

    def __init__(self, generation_id: str, message: str) -> None:
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
