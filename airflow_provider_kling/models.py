"""Typed requests and results of the Kling image-to-video API.

Requests are validated with pydantic before anything is sent, so a bad value fails the task with
an error naming the field and what is allowed, and no paid generation starts.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from airflow_provider_kling.exceptions import KlingValidationError


@dataclass(frozen=True)
class ModelCapabilities:
    """What one model accepts beside the image and prompt."""

    tail_image: bool
    masks: bool


#: Models known to share the generation endpoint (AIML API, 2025) and what each accepts.
MODEL_CAPABILITIES: dict[str, ModelCapabilities] = {
    "kling-video/v1/standard/image-to-video": ModelCapabilities(tail_image=True, masks=True),
    "kling-video/v1/pro/image-to-video": ModelCapabilities(tail_image=True, masks=True),
    "kling-video/v1.6/standard/image-to-video": ModelCapabilities(tail_image=False, masks=False),
    "kling-video/v1.6/pro/image-to-video": ModelCapabilities(tail_image=True, masks=False),
}

MAX_DYNAMIC_MASKS = 6
MIN_TRAJECTORY_POINTS = 2
MAX_TRAJECTORY_POINTS = 77


def check_http_url(value: str) -> str:
    """Return ``value`` when it is an absolute http(s) URL with a host, else raise ValueError."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
    return value.strip()


class _FieldError(ValueError):
    """A cross-field rule broken, reported under the field that has to change."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class TrajectoryPoint(_Strict):
    """One point of a motion-brush trajectory, in pixels, origin at the image's bottom-left."""

    x: StrictInt = Field(ge=0)
    y: StrictInt = Field(ge=0)


class DynamicMask(_Strict):
    """A motion-brush area and the path it moves along."""

    mask_url: str
    trajectories: list[TrajectoryPoint] = Field(
        min_length=MIN_TRAJECTORY_POINTS, max_length=MAX_TRAJECTORY_POINTS
    )

    _url = field_validator("mask_url")(check_http_url)


class ImageToVideoRequest(_Strict):
    """The body of a Kling image-to-video generation, validated against the API page and Kling's limits.

    :param model: the Kling model id (required, as the service requires it); see
        :data:`MODEL_CAPABILITIES`.
    :param image_url: http(s) URL of the first frame (jpg/png, at least 300 px a side).
    :param prompt: the text that guides the motion.
    :param tail_image_url: http(s) URL of the last frame (v1 models and v1.6 pro only).
    :param static_mask_url: http(s) URL of the motion brush's static area (v1 models only).
    :param dynamic_masks: up to 6 motion-brush masks, each with 2 to 77 trajectory points.
    :param duration: "5" or "10" seconds (ints accepted).
    :param negative_prompt: what to keep out of the video.
    :param cfg_scale: 0 to 1, how closely to follow the prompt.
    :param ratio: deprecated by the service (the video follows the image's aspect ratio).
    :param aspect_ratio: deprecated by the service, as ``ratio``.
    :param check_capabilities: False to send a model the provider does not know yet, skipping the
        per-model checks; never sent to the service.
    """

    model: str
    image_url: str
    prompt: str = Field(min_length=1)
    tail_image_url: str | None = None
    static_mask_url: str | None = None
    dynamic_masks: list[DynamicMask] | None = Field(default=None, max_length=MAX_DYNAMIC_MASKS)
    duration: Literal["5", "10"] = "5"
    negative_prompt: str | None = None
    cfg_scale: float | None = Field(default=None, ge=0, le=1)
    ratio: str | None = None
    aspect_ratio: str | None = None
    check_capabilities: bool = Field(default=True, exclude=True)

    _urls = field_validator("image_url", "tail_image_url", "static_mask_url")(
        lambda v: None if v is None else check_http_url(v)
    )

    @field_validator("duration", mode="before")
    @classmethod
    def _duration_as_text(cls, value: Any) -> Any:
        # The page types duration as a string; users naturally write 5 or 10.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("cfg_scale", mode="before")
    @classmethod
    def _no_bool_scale(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number from 0 to 1, got a boolean")
        return value

    @field_validator("ratio", "aspect_ratio")
    @classmethod
    def _deprecated(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            warnings.warn(
                f"{info.field_name} is deprecated by the Kling API: the video follows the input "
                "image's aspect ratio",
                DeprecationWarning,
                stacklevel=2,
            )
        return value

    @model_validator(mode="after")
    def _model_rules(self) -> ImageToVideoRequest:
        if self.tail_image_url and (self.static_mask_url or self.dynamic_masks):
            raise _FieldError(
                "tail_image_url",
                "cannot be combined with static_mask_url or dynamic_masks (Kling accepts one of them)",
            )
        if not self.check_capabilities:
            return self
        caps = MODEL_CAPABILITIES.get(self.model)
        if caps is None:
            known = ", ".join(sorted(MODEL_CAPABILITIES))
            raise _FieldError(
                "model",
                f"{self.model!r} is not known to this provider; use one of {known}, "
                "or pass check_capabilities=False to send it anyway",
            )
        if self.tail_image_url and not caps.tail_image:
            raise _FieldError("tail_image_url", f"is not accepted by model {self.model!r}")
        if (self.static_mask_url or self.dynamic_masks) and not caps.masks:
            field = "static_mask_url" if self.static_mask_url else "dynamic_masks"
            raise _FieldError(
                field, f"is not accepted by model {self.model!r} (masks need a kling-video/v1 model)"
            )
        return self

    def to_payload(self) -> dict[str, Any]:
        """The JSON body to POST: only the fields that were set."""
        return self.model_dump(mode="json", exclude_none=True)


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names accepted where an unknown field ``loc`` was found (request, mask or point)."""
    depth = sum(1 for part in loc if isinstance(part, str))
    model: type[BaseModel] = (ImageToVideoRequest, DynamicMask, TrajectoryPoint)[min(depth, 3) - 1]
    return list(model.model_fields)


def _format_error(error: Any) -> tuple[str, str]:
    field = ".".join(str(part) for part in error["loc"]) or "request"
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        return cause.field, str(cause)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_fields(error["loc"]))
        message = f"is not a field of the Kling request; allowed here: {allowed}"
    elif error["type"] not in ("value_error", "missing") and "input" in error:
        shown = repr(error["input"])
        # A 78-point trajectory would otherwise fill the task log.
        if len(shown) > 80:
            shown = shown[:77] + "..."
        message = f"{message} (got {shown})"
    return field, message


def build_request(values: ImageToVideoRequest | dict[str, Any]) -> ImageToVideoRequest:
    """Validate ``values`` into an :class:`ImageToVideoRequest`, raising :class:`KlingValidationError`."""
    if isinstance(values, ImageToVideoRequest):
        return values
    if not isinstance(values, dict):
        raise KlingValidationError([("request", f"must be a mapping of fields, got {type(values).__name__}")])
    try:
        return ImageToVideoRequest.model_validate(values)
    except ValidationError as exc:
        raise KlingValidationError([_format_error(e) for e in exc.errors()]) from None


class GenerationStatus(str, enum.Enum):
    """A generation's state, normalised from the service's many status words."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"

    @classmethod
    def from_raw(cls, raw: str | None) -> GenerationStatus:
        word = (raw or "").strip().lower()
        if word in ("completed", "succeeded", "success", "done"):
            return cls.COMPLETED
        if word in ("error", "failed", "failure"):
            return cls.FAILED
        # queued, generating, waiting, active, processing and anything new: keep waiting.
        return cls.PENDING


def error_message(error: Any) -> str | None:
    """A readable message from either error shape the service uses (or None when there is none)."""
    if error is None or error == {} or error == "":
        return None
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        detail = error.get("detail")
        if isinstance(detail, list) and detail:
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                    msg = str(item.get("msg", item))
                    parts.append(f"{loc}: {msg}" if loc else msg)
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        if isinstance(detail, str):
            return detail
        message = error.get("message")
        name = error.get("name")
        if message:
            return f"{name}: {message}" if name else str(message)
        if name:
            return str(name)
    return str(error)


class Generation(BaseModel):
    """One poll's view of a generation.

    :param id: the generation id.
    :param status: the normalised state.
    :param raw_status: the service's own word.
    :param video_url: signed URL of the video once completed (it expires: download promptly).
    :param file_name: the video's file name as the service names it.
    :param file_size: the video's size in bytes, when given.
    :param error: the service's readable reason when failed.
    :param usage: the ``meta.usage`` block (tokens_used, credits_used or usd_spent).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: GenerationStatus
    raw_status: str | None = None
    video_url: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    content_type: str | None = None
    duration: float | None = None
    error: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_api(cls, body: dict[str, Any], generation_id: str | None = None) -> Generation:
        """Read the poll answer; missing or null parts are tolerated."""
        video = body.get("video") or {}
        if not isinstance(video, dict):
            video = {"url": str(video)}
        meta = body.get("meta") or {}
        usage = meta.get("usage") if isinstance(meta, dict) else None
        raw = body.get("status")
        status = GenerationStatus.from_raw(raw)
        message = error_message(body.get("error"))
        if status is GenerationStatus.FAILED and not message:
            message = f"the service ended the generation with status {raw!r} and no message"
        size: Any = video.get("file_size")
        return cls(
            id=str(body.get("id") or body.get("generation_id") or generation_id or ""),
            status=status,
            raw_status=None if raw is None else str(raw),
            video_url=video.get("url"),
            file_name=video.get("file_name"),
            file_size=int(size) if isinstance(size, (int, float)) or str(size).isdigit() else None,
            content_type=video.get("content_type"),
            duration=video.get("duration") if isinstance(video.get("duration"), (int, float)) else None,
            error=message,
            usage=usage if isinstance(usage, dict) else {},
        )

    @property
    def is_terminal(self) -> bool:
        return self.status is not GenerationStatus.PENDING
