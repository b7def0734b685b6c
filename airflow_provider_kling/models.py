"""Typed requests and results of the Kling video API: a re-export of :mod:`airflow_provider_kling.schemas`.

The code lives in ``schemas/``: :mod:`~airflow_provider_kling.schemas.media` (one media input),
:mod:`~airflow_provider_kling.schemas.request` (field types, rules, ``KlingRequest``, ``build_request``),
:mod:`~airflow_provider_kling.schemas.file_inputs` (``resolve_file_inputs``) and
:mod:`~airflow_provider_kling.schemas.generation` (``Generation``). Every name this module defined
before the split stays importable from here.
"""

from __future__ import annotations

from airflow_provider_kling.schemas.file_inputs import _image_slots as _image_slots
from airflow_provider_kling.schemas.file_inputs import resolve_file_inputs
from airflow_provider_kling.schemas.generation import (
    Generation,
    GenerationStatus,
    error_message,
    usable_video_url,
)
from airflow_provider_kling.schemas.media import (
    PRESIGN_SCHEMES,
    PRESIGN_SECONDS,
    STORAGE_SCHEMES,
    check_http_url,
    image_mime,
    is_file_reference,
    presign_image,
    read_image_file,
)
from airflow_provider_kling.schemas.request import (
    AdvancedCameraControl,
    CameraConfig,
    CameraControl,
    KlingRequest,
    TrajectoryPoint,
    build_request,
    request_model,
)

__all__ = [
    "PRESIGN_SCHEMES",
    "PRESIGN_SECONDS",
    "STORAGE_SCHEMES",
    "AdvancedCameraControl",
    "CameraConfig",
    "CameraControl",
    "Generation",
    "GenerationStatus",
    "KlingRequest",
    "TrajectoryPoint",
    "build_request",
    "check_http_url",
    "error_message",
    "image_mime",
    "is_file_reference",
    "presign_image",
    "read_image_file",
    "request_model",
    "resolve_file_inputs",
    "usable_video_url",
]
