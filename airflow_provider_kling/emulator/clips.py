"""What clip a request asks for: its duration, frame size, audio track and generation time.

:func:`clip_spec` reads a request body the way the service would shape its output: the duration from
``duration`` (or the sum of ``multi_prompt`` shot durations, else the model's default), the aspect
ratio from ``aspect_ratio`` or from the input image (read from a Base64 data URI only: the emulator
never fetches URLs), a 720p or 1080p class per model scaled down by :data:`SCALE` to keep files small,
and an audio track when the model makes or keeps one. :func:`generation_seconds` gives each model its
documented generation time relative to a reference, so one knob (the emulator's
``generation_seconds``) scales them all.

Nothing here encodes: :mod:`~airflow_provider_kling.emulator.encoder` turns a :class:`ClipSpec` into
an MP4.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_kling import catalog
from airflow_provider_kling.emulator import pricing

#: The service's durations in seconds (v3 models take 3..15; older ones 5 or 10).
MIN_SECONDS, MAX_SECONDS = 3, 15
DEFAULT_SECONDS = 5
#: Real frame sizes divided by this (720p -> 256x144 at 16:9, 1080p -> 384x216): small, quick files.
SCALE = 5
#: Frames per second of the emulator's clips (the service's are 24 or 30: a low rate keeps files small).
FPS = 8
#: Output aspects the service allows for an input image (Kling's 1:2.5 .. 2.5:1).
MAX_IMAGE_RATIO = 2.5
#: Ratio width/height of each ``aspect_ratio`` choice.
ASPECTS: dict[str, tuple[int, int]] = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}
DEFAULT_ASPECT = "16:9"
#: How much of a data URI is decoded to find an image's size: headers sit near the start.
_HEADER_CHARS = 96 * 1024

#: Documented seconds per 5 s of video (MODELS.md, FACTS.md); other models take the reference's.
REFERENCE_SECONDS = 270.0  # a 5 s v1 standard clip: "about 4-5 minutes"
_MODEL_SECONDS: tuple[tuple[str, float], ...] = (
    ("master", 330.0),  # v2/v2.1 master: 5-6 minutes
    ("v2.1/pro", 210.0),  # v2.1 pro: 3-4 minutes
)


@dataclass(frozen=True)
class ClipSpec:
    """The clip a generation serves: what the encoder needs, and the cache's key.

    :param duration: length in whole seconds.
    :param width: frame width in pixels (even).
    :param height: frame height in pixels (even).
    :param audio: whether the clip has an audio track.
    """

    duration: int
    width: int
    height: int
    audio: bool


def clip_spec(body: Mapping[str, Any]) -> ClipSpec:
    """Return the clip the service would make for request ``body`` (scaled down).

    :param body: a request body the emulator accepted (``model`` plus the model's fields).
    """
    model = str(body.get("model", ""))
    short = resolution_class(model, body) // SCALE
    width, height = _frame(short, _aspect(model, body))
    duration = clip_duration(model, body)
    return ClipSpec(duration=duration, width=width, height=height, audio=has_audio(model, body))


def clip_duration(model: str, body: Mapping[str, Any]) -> int:
    """Seconds of video for ``body``: ``duration``, else the multi_prompt shots' sum, else (an avatar)
    the length of audio sent as a data URI PyAV reads, else for avatar, edit and motion-control models
    the length :func:`~airflow_provider_kling.emulator.pricing.variable_seconds` bills, else the
    model's default; always 3..15.

    :param model: the requested model id.
    :param body: the request body.
    """
    seconds = _seconds(body.get("duration"))
    if seconds is None and (catalog.model_entry(model) or {}).get("kind") == "avatar":
        seconds = _audio_seconds(body.get("audio_url"))  # a talking avatar lasts as long as its audio
    if seconds is None:
        shots = body.get("multi_prompt")
        shots = shots if isinstance(shots, list) else []
        parts = [_seconds(s.get("duration")) for s in shots if isinstance(s, dict)]
        if parts and all(p is not None for p in parts):
            seconds = sum(p for p in parts if p is not None)
    if seconds is None and pricing.canonical(model) in pricing.VARIABLE_RATES:
        seconds = pricing.variable_seconds(body)  # the length the emulator bills these models for
    if seconds is None:
        entry = catalog.model_entry(model) or {}
        seconds = int(entry.get("defaults", {}).get("duration", DEFAULT_SECONDS))
    return min(MAX_SECONDS, max(MIN_SECONDS, seconds))


def resolution_class(model: str, body: Mapping[str, Any]) -> int:
    """The output's short side before scaling: 1080 or 720.

    The id says it for the omni models (``...-1080p-...``); otherwise pro and master models (and
    motion control in ``mode: "pro"``) make 1080p, standard ones 720p, as the service's price
    variants do.

    :param model: the requested model id.
    :param body: the request body.
    """
    model_id = catalog.MODEL_ALIASES.get(model, model)
    if "1080p" in model_id:
        return 1080
    if "720p" in model_id:
        return 720
    if "pro" in model_id.replace("/", "-").split("-") or "master" in model_id or body.get("mode") == "pro":
        return 1080
    return 720


def has_audio(model: str, body: Mapping[str, Any]) -> bool:
    """Whether the clip has sound: generated (v2.6, v3), given (avatar) or kept (video to video).

    :param model: the requested model id.
    :param body: the request body.
    """
    entry = catalog.model_entry(model) or {}
    fields = catalog.model_fields(model)
    if entry.get("kind") == "avatar":
        return True
    if "generate_audio" in fields:
        return body.get("generate_audio", True) is not False
    if "keep_audio" in fields:
        # Motion control keeps the source's sound unless told not to; video edits drop it unless told.
        return body.get("keep_audio", entry.get("kind") == "motion-control") is True
    return False


def generation_seconds(model: str, duration: int, reference: float) -> float:
    """Seconds a generation takes: ``reference`` for a 5 s reference clip, scaled per model and length.

    :param model: the requested model id.
    :param duration: seconds of video.
    :param reference: what the emulator's ``generation_seconds`` says a 5 s reference clip takes.
    """
    model_id = catalog.MODEL_ALIASES.get(model, model)
    per_5s = next((s for key, s in _MODEL_SECONDS if key in model_id), REFERENCE_SECONDS)
    return reference * per_5s / REFERENCE_SECONDS * duration / DEFAULT_SECONDS


def image_size(data_uri: str) -> tuple[int, int] | None:
    """Width and height of a PNG, JPEG or GIF sent as a Base64 data URI; None for anything else.

    Only the start of the data is decoded (the size sits in the headers).

    :param data_uri: the field's value.
    """
    if not data_uri.startswith("data:") or ";base64," not in data_uri[:200]:
        return None
    encoded = data_uri.split(",", 1)[1][:_HEADER_CHARS]
    encoded = encoded[: len(encoded) // 4 * 4]
    try:
        head = base64.b64decode(encoded)
    except (binascii.Error, ValueError):
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return (width, height) if width and height else None
    if head[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", head[6:10])
        return (width, height) if width and height else None
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    # Walk the segments up to a start-of-frame marker (C0..CF but C4, C8, CC), which holds the size.
    pos = 2
    while pos + 9 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", head[pos + 2 : pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[pos + 5 : pos + 9])
            return (width, height) if width and height else None
        pos += 2 + length
    return None


def _audio_seconds(value: Any) -> int | None:
    """Whole seconds of audio sent as a Base64 data URI (read with PyAV when installed), else None."""
    if not isinstance(value, str) or not value.startswith("data:") or ";base64," not in value[:200]:
        return None
    from airflow_provider_kling.emulator.probe import media_seconds

    try:
        data = base64.b64decode(value.split(",", 1)[1])
    except (binascii.Error, ValueError):
        return None
    seconds = media_seconds(data)
    return max(1, round(seconds)) if seconds else None


def _aspect(model: str, body: Mapping[str, Any]) -> float:
    """Width / height of the output: ``aspect_ratio`` where the model takes it, else the image's."""
    entry = catalog.model_entry(model) or {}
    deprecated = entry.get("deprecated", {})
    for name in ("aspect_ratio", "ratio"):
        value = body.get(name)
        if isinstance(value, str) and value in ASPECTS and name not in deprecated:
            w, h = ASPECTS[value]
            return w / h
    image = body.get("image_url")
    if isinstance(image, list) and image:
        image = image[0]
    size = image_size(image) if isinstance(image, str) else None
    if size is not None:
        return min(MAX_IMAGE_RATIO, max(1 / MAX_IMAGE_RATIO, size[0] / size[1]))
    w, h = ASPECTS[DEFAULT_ASPECT]
    return w / h


def _frame(short: int, ratio: float) -> tuple[int, int]:
    """Even width and height with ``short`` pixels on the short side at ``ratio`` (width / height)."""
    long = 2 * round(short * max(ratio, 1 / ratio) / 2)
    return (long, short) if ratio >= 1 else (short, long)


def _seconds(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
