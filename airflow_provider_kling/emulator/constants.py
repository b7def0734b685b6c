"""The emulator's vocabulary: its routes, the answer styles it can take and the shared logger.

Every other emulator module reads these; this one imports nothing of the emulator.
"""

from __future__ import annotations

import logging
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
