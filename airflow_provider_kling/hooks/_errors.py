"""Answers to exceptions: one HTTP answer (or a failure to get one) becomes the provider's error.

Status codes map to the classes of :mod:`airflow_provider_kling.exceptions` with the request id,
Retry-After and a hint about the connection; transport failures become :class:`KlingTLSError` or
:class:`KlingConnectionError` with URLs redacted before they reach any message.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_kling.catalog import ENDPOINT_PATHS
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingConnectionError,
    KlingForbiddenError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingServerError,
    KlingTLSError,
    KlingUnusableIdError,
    redact_urls,
)
from airflow_provider_kling.hooks._connection import DEFAULT_BASE_URL, GENERATION_PATH
from airflow_provider_kling.utils.validation import MAX_ID_LENGTH, id_problem

if TYPE_CHECKING:
    from airflow_provider_kling.hooks._connection import _Endpoint


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP dates are always GMT (RFC 9110); one written without a zone is read as UTC, not local.
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


_ERRORS_BY_STATUS: dict[int, type[KlingAPIError]] = {
    400: KlingBadRequestError,
    401: KlingAuthError,
    403: KlingForbiddenError,
    404: KlingNotFoundError,
    429: KlingRateLimitError,
}


def _hint(status: int, method: str, endpoint: _Endpoint | None) -> str | None:
    """What to change in the connection for an answer that points at it."""
    if endpoint is None:
        return None
    conn = endpoint.conn_id
    if status == 401:
        return (
            f"The API key of connection {conn!r} was refused: put a valid Apilaplas key in its "
            "password field ('API Key')"
        )
    if status == 403:
        return (
            f"The API key of connection {conn!r} was refused for this call: its account may have no "
            "credits left or no access to this model"
        )
    if status == 404 and (method == "POST" or urlsplit(endpoint.base_url).path):
        return (
            f"The host of connection {conn!r} must be the base URL only (e.g. {DEFAULT_BASE_URL}), "
            f"not the endpoint path: it is {endpoint.host_text or endpoint.base_url!r}, and the "
            f"provider adds {', '.join(ENDPOINT_PATHS.values())} itself"
        )
    return None


#: The cost header carrying the billed USD (the same figure as ``meta.usage.usd_spent``).
USD_HEADER = "x-aimlapi-usd-spent"


def _with_cost_headers(data: dict[str, Any], headers: Any) -> dict[str, Any]:
    """Fill ``meta.usage.usd_spent`` from the answer's cost header when the body leaves it out."""
    value = headers.get(USD_HEADER) if headers is not None else None
    try:
        spent = float(value) if value is not None else None
    except ValueError:
        spent = None
    meta = data.get("meta")
    if spent is None or spent != spent or (meta is not None and not isinstance(meta, dict)):
        return data
    usage = (meta or {}).get("usage")
    if usage is not None and not isinstance(usage, dict):
        return data
    return {**data, "meta": {**(meta or {}), "usage": {"usd_spent": spent, **(usage or {})}}}


def _read_response(
    method: str, path: str, status: int, body: bytes, headers: Any, endpoint: _Endpoint | None = None
) -> dict[str, Any]:
    """Turn one HTTP answer into its JSON body, or the provider's error for it."""
    if 200 <= status < 300:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            data = None
        if not isinstance(data, dict):
            snippet = body[:200].decode("utf-8", "replace")
            raise KlingServerError(
                status,
                f"answered with a body that is not a JSON object: {snippet!r}",
                method=method,
                path=path,
            )
        return _with_cost_headers(data, headers)
    try:
        err = json.loads(body)
    except (ValueError, RecursionError):
        err = None
    message = ""
    request_id = None
    if isinstance(err, dict):
        message = str(err.get("message") or err.get("detail") or err.get("error") or "")
        request_id = err.get("requestId") or err.get("request_id")
    if not message:
        message = body[:200].decode("utf-8", "replace").strip() or "no message"
    cls = _ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = KlingServerError if status >= 500 else KlingAPIError
    raise cls(
        status,
        message[:500],
        request_id=str(request_id)[:100] if request_id else None,
        method=method,
        path=path,
        retry_after=_parse_retry_after(headers.get("Retry-After")),
        hint=_hint(status, method, endpoint),
    )


def _tls_reason(exc: BaseException) -> str:
    text = str(exc)
    found = re.search(r"\[SSL: ([A-Z_]+)\] ([^('\")]+)", text) or re.search(
        r"(certificate verify failed[^'\")]*)", text
    )
    if found:
        return " ".join(part.strip() for part in found.groups())
    return redact_urls(text)[:200]


def _tls_error(exc: BaseException, endpoint: _Endpoint | None, where: str) -> KlingTLSError:
    reason = _tls_reason(exc)
    if endpoint is not None and endpoint.assumed_https:
        return KlingTLSError(
            f"TLS handshake with {where} failed ({reason}), so nothing was sent: assumed https:// for "
            f"host {endpoint.host_text!r} of connection {endpoint.conn_id!r}, which has no scheme; "
            f"for a local emulator use {endpoint.base_url.replace('https://', 'http://', 1)}"
        )
    return KlingTLSError(
        f"TLS handshake with {where} failed ({reason}), so nothing was sent; not retried: fix the "
        "certificate or the host's scheme"
    )


def _connection_error(exc: BaseException, what: str, *, nothing_sent: bool) -> KlingConnectionError:
    return KlingConnectionError(
        redact_urls(f"{what}: {type(exc).__name__}: {exc}"), nothing_sent=nothing_sent
    )


def _id_from_submit(body: dict[str, Any], path: str = GENERATION_PATH) -> str:
    """The id a POST answer carries; an unusable id is a paid-for problem, never "nothing was sent"."""
    generation_id = body.get("id") or body.get("generation_id")
    if generation_id is None or generation_id == "":
        raise KlingServerError(
            200,
            f"the service accepted the generation but sent no id: {str(body)[:500]}",
            method="POST",
            path=path,
        )
    if isinstance(generation_id, bool) or not isinstance(generation_id, (str, int)):
        raise KlingUnusableIdError(repr(generation_id)[:300], "it is not text", path=path)
    text = str(generation_id)
    problem = id_problem(text)
    if problem:
        raise KlingUnusableIdError(
            text,
            f"ids must be non-empty text of at most {MAX_ID_LENGTH} characters without spaces or "
            f"control characters ({problem})",
            path=path,
        )
    return text


def _is_refused(exc: BaseException) -> bool:
    """Walk the cause chain for a refused TCP connect (nothing was sent)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "NewConnectionError" in type(seen).__name__:
            return True
        if seen.args and isinstance(seen.args[0], BaseException) and seen.args[0] is not seen:
            seen = seen.args[0]
            continue
        seen = seen.__cause__ or seen.__context__
    return "Connection refused" in str(exc) or "Failed to establish a new connection" in str(exc)
