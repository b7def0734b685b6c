"""Argument checks shared by the hook, operators, sensor and triggers, run before anything is sent.

Only the catalog and the exceptions are imported: operators and the sensor may use these at DAG
parse time without pulling in an HTTP client.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from airflow_provider_kling.catalog import ENDPOINT_PATHS
from airflow_provider_kling.exceptions import KlingValidationError

#: Longest generation id accepted (ids are otherwise opaque: the service's own text, URL-encoded).
MAX_ID_LENGTH = 256
ID_RULE = (
    "must be the id the service returned: non-empty text of at most "
    f"{MAX_ID_LENGTH} characters without spaces or control characters"
)


def check_api(api: Any) -> str | None:
    """Return ``api`` when it names one of the service's endpoints (or is None), else raise."""
    if api is None or api in ENDPOINT_PATHS:
        return api
    raise KlingValidationError([("api", f"must be one of {', '.join(ENDPOINT_PATHS)} or None, got {api!r}")])


def id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a generation id, or None. Ids are opaque: anything printable goes."""
    if not isinstance(value, str):
        return f"got {type(value).__name__} {value!r}"
    if not value:
        return "got an empty id"
    if len(value) > MAX_ID_LENGTH:
        return f"got {len(value)} characters"
    if _has_space_or_control(value):
        return f"got {value!r}, which holds spaces or control characters"
    if value in ("None", "null"):
        # What a template renders when its value is missing, e.g. an XCom that was never pushed.
        return f"got the text {value!r}"
    return None


def _has_space_or_control(value: str) -> bool:
    """Whether ``value`` holds whitespace or a control, format or line/paragraph separator character.

    A trigger checks its id at every poll: an ASCII id (what the service hands out) is settled by two
    C-level scans, the same verdict as the per-character walk that other text gets (in ASCII the only
    non-printable characters are the controls, and the only printable space is the space itself).
    """
    if value.isascii():
        return not value.isprintable() or " " in value
    return any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value)


def check_generation_id(generation_id: Any) -> str:
    """Return the id (outer whitespace removed) when it can be one the service hands out, else raise.

    Ids are opaque to the provider: any text of at most 256 characters without spaces or control
    characters, sent URL-encoded. Raised before anything is sent (:class:`KlingValidationError`).
    """
    value = generation_id.strip() if isinstance(generation_id, str) else generation_id
    problem = id_problem(value)
    if problem:
        if problem.startswith("got the text"):
            rule = "must be an id as returned by the service"
        else:
            rule = ID_RULE
        raise KlingValidationError([("generation_id", f"{rule}, {problem}")])
    return str(value)


def check_poll_settings(poll_interval: Any, timeout: Any) -> None:
    """Reject poll intervals and timeouts that cannot be meant (before anything is sent)."""
    errors = []
    if (
        isinstance(poll_interval, bool)
        or not isinstance(poll_interval, (int, float))
        or not (0.01 <= poll_interval <= 3600)
    ):
        errors.append(
            ("poll_interval", f"must be a number of seconds from 0.01 to 3600, got {poll_interval!r}")
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 < timeout <= 7 * 86400):
        errors.append(("timeout", f"must be a number of seconds above 0 and at most 7 days, got {timeout!r}"))
    if errors:
        raise KlingValidationError(errors)


__all__ = [
    "ID_RULE",
    "MAX_ID_LENGTH",
    "check_api",
    "check_generation_id",
    "check_poll_settings",
    "id_problem",
]
