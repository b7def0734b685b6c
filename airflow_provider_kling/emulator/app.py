"""Compatibility: every name this module defined before the emulator was split into modules.

The emulator now lives in :mod:`~airflow_provider_kling.emulator.server` (:class:`KlingEmulator`, its
lifecycle), :mod:`~airflow_provider_kling.emulator.api` (the service's endpoints),
:mod:`~airflow_provider_kling.emulator.downloads` (videos, blobs, redirects),
:mod:`~airflow_provider_kling.emulator.control` (the ``/_emulator`` control API),
:mod:`~airflow_provider_kling.emulator.faults` (the fault engine),
:mod:`~airflow_provider_kling.emulator.answers` (answers on the wire: Range, faults),
:mod:`~airflow_provider_kling.emulator.validation` (body validation),
:mod:`~airflow_provider_kling.emulator.state` (requests and generations),
:mod:`~airflow_provider_kling.emulator.media` (the bytes served) and
:mod:`~airflow_provider_kling.emulator.constants` (routes and styles). Import from there in new code.
"""

# The private names are re-exported too (older tests and tools import them from here).
# ruff: noqa: F401

from __future__ import annotations

from airflow_provider_kling.emulator.answers import (
    _accepts_gzip,
    _client_port,
    _dribble,
    _drop,
    _now_iso,
)
from airflow_provider_kling.emulator.api import (
    CREDITS_PER_5S_2026,
    CREDITS_PER_USD,
    FACE_ERROR,
    OPAQUE_ALPHABET,
    POLICY_ERROR_2026,
    TOKENS_PER_5S,
    USD_PER_5S,
)
from airflow_provider_kling.emulator.constants import (
    ANSWER_STYLES,
    API_PATH,
    API_PATHS,
    BLOB_PREFIX,
    CONTROL_PREFIX,
    ID_KEYS,
    ID_STYLES,
    REDIRECT_PATH,
    STATUS_STYLES,
    UNIFIED_PATH,
    USAGE_STYLES,
    VIDEO_PREFIX,
    _check_choice,
    log,
)
from airflow_provider_kling.emulator.faults import (
    _FAULT_MESSAGES,
    _NO_BODY,
    BODY_FAULTS,
    DEFAULT_HUGE_SIZE,
    DEFAULT_SLOW_DELAY,
    DRIBBLE_PIECE,
    FAULT_HELP,
    FAULT_KINDS,
    PRE_FAULTS,
    _Fault,
    _retry_after,
    _Script,
)
from airflow_provider_kling.emulator.media import (
    _BLOB_PATTERN,
    _BLOB_PERIOD,
    CHUNK,
    MAX_BLOB,
    SAMPLE_CHUNK,
    SAMPLE_PATH,
    _Body,
    _parse_range,
    blob_bytes,
)
from airflow_provider_kling.emulator.server import (
    LISTEN_BACKLOG,
    MAX_REQUEST_BYTES,
    KlingEmulator,
    _raise_nofile_limit,
)
from airflow_provider_kling.emulator.state import (
    _RECORD_FIELDS,
    ERROR_2026_MARKER,
    ERROR_MARKER,
    SECONDS_MARKER,
    Generation,
    RecordedRequest,
    _marker_text,
    _requested_duration,
)
from airflow_provider_kling.emulator.validation import (
    DURATIONS,
    KNOWN_MODELS,
    _duration_error,
    _field_error,
    _masks_error,
    _number_error,
    _string_error,
    _zod_type,
    validate_body,
)

__all__ = [
    "ANSWER_STYLES",
    "API_PATH",
    "API_PATHS",
    "BLOB_PREFIX",
    "BODY_FAULTS",
    "CHUNK",
    "CONTROL_PREFIX",
    "CREDITS_PER_5S_2026",
    "CREDITS_PER_USD",
    "DEFAULT_HUGE_SIZE",
    "DEFAULT_SLOW_DELAY",
    "DRIBBLE_PIECE",
    "DURATIONS",
    "ERROR_2026_MARKER",
    "ERROR_MARKER",
    "FACE_ERROR",
    "FAULT_HELP",
    "FAULT_KINDS",
    "ID_KEYS",
    "ID_STYLES",
    "KNOWN_MODELS",
    "LISTEN_BACKLOG",
    "MAX_BLOB",
    "MAX_REQUEST_BYTES",
    "OPAQUE_ALPHABET",
    "POLICY_ERROR_2026",
    "PRE_FAULTS",
    "REDIRECT_PATH",
    "SAMPLE_CHUNK",
    "SAMPLE_PATH",
    "SECONDS_MARKER",
    "STATUS_STYLES",
    "TOKENS_PER_5S",
    "UNIFIED_PATH",
    "USAGE_STYLES",
    "USD_PER_5S",
    "VIDEO_PREFIX",
    "Generation",
    "KlingEmulator",
    "RecordedRequest",
    "blob_bytes",
    "validate_body",
]
