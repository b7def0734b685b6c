"""The emulator's vocabulary: its routes, the answer styles it can take and the shared logger.

Every other emulator module reads these; this one imports nothing of the emulator.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from airflow_provider_kling import catalog

# One logger for the whole emulator, under the name it has always had (logging settings keep working).
log = logging.getLogger("airflow_provider_kling.emulator.app")

#: The legacy (seed) endpoint and the unified one; same protocol on both.
API_PATH = catalog.ENDPOINT_PATHS["legacy"]
UNIFIED_PATH = catalog.ENDPOINT_PATHS["unified"]
#: API path -> endpoint name ("legacy" or "unified").
API_PATHS: dict[str, str] = {path: name for name, path in catalog.ENDPOINT_PATHS.items()}
CONTROL_PREFIX = "/_emulator"
VIDEO_PREFIX = "/_emulator/videos"
BLOB_PREFIX = "/_emulator/blob"
REDIRECT_PATH = "/_emulator/redirect"
#: The account side: the priced catalogue (two list forms and one model), spend and request logs.
MODELS_PATH = "/v1/models"
MODEL_PATH_PREFIX = "/model/"
USAGE_PATH = "/v2/usage"
LOGS_PATH = "/v2/logs"
#: Account routes and features a test can turn off (``configure_account(disabled=...)``).
ACCOUNT_SWITCHES = ("models", "usage", "logs", "client_request_id", "cost_headers", "inference_id")
#: ``X-Client-Request-Id``: 1-128 of these characters, else silently dropped (as documented).
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def valid_client_request_id(value: str | None) -> str | None:
    """``value`` when it is a valid client request id (1-128 of ``A-Z a-z 0-9 . _ : -``), else None.

    :param value: the ``X-Client-Request-Id`` header as sent.
    """
    return value if value is not None and CLIENT_REQUEST_ID.fullmatch(value) else None


#: Status names per ``status_style``: (pending-queued, pending-running, done, failed).
STATUS_STYLES: dict[str, tuple[str, str, str, str]] = {
    "documented": ("queued", "generating", "completed", "error"),
    "alternate": ("waiting", "processing", "succeeded", "failed"),
}
#: uuid ``<uuid>:<model>``, short ``gen_ab12cd34``, opaque 21 characters, numeric Kling task id.
ID_STYLES = ("uuid", "short", "opaque", "numeric")
ID_KEYS = ("id", "generation_id")
USAGE_STYLES = ("tokens", "credits")
#: "2025": the seed-era shapes; "2026": opaque ids, credits + usd usage, video with only a signed url.
ANSWER_STYLES = ("2025", "2026")


def _check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    allowed = tuple(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
