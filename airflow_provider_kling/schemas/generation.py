"""Results of the Kling video API: statuses, and one poll's view of a generation.

:class:`Generation` reads the service's answers (either error shape, a video object, a list of them
or a bare URL) and keeps only usable http(s) video URLs; its ``is_terminal`` says whether to stop
polling.
"""

from __future__ import annotations

import enum
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airflow_provider_kling.exceptions import redact_urls


class GenerationStatus(str, enum.Enum):
    """A generation's state, normalised from the service's many status words."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"

    @classmethod
    def from_raw(cls, raw: Any) -> GenerationStatus:
        word = str(raw if raw is not None else "").strip().lower()
        if word in ("completed", "succeeded", "succeed", "success", "done"):
            return cls.COMPLETED
        if word in ("error", "failed", "failure"):
            return cls.FAILED
        # queued, generating, waiting, active, processing, submitted and anything new: keep waiting.
        return cls.PENDING


def error_message(error: Any) -> str | None:
    """A readable message from either error shape the service uses (or None when there is none).

    :param error: the answer's ``error``: text, ``{"name", "message"}`` or ``{"detail": [...]}``.
    """
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
                    loc = item.get("loc")
                    where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
                    msg = str(item.get("msg", item))
                    parts.append(f"{where}: {msg}" if where else msg)
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


def _text_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _number_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool):  # None first: float("None") would raise, slowly
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def usable_video_url(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL with a host, else None.

    Video URLs come from the service and end up as links (XCom, the extra link, the gallery) and as
    download sources: a ``javascript:``, ``data:`` or ``file:`` URL, or one with whitespace or control
    characters (which browsers drop, reviving such a scheme), is no usable URL.

    :param value: a video URL as the service answered it (any type).
    """
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return url


def _video_urls(video: Any) -> list[str]:
    """Every usable URL of a ``video`` answer: an object, a list of objects (v3 omni) or a bare URL."""
    items = video if isinstance(video, list) else [video]
    urls = []
    for item in items:
        url = usable_video_url(item.get("url") if isinstance(item, dict) else item)
        if url is not None:
            urls.append(url)
    return urls


class Generation(BaseModel):
    """One poll's (or the submit answer's) view of a generation.

    :param id: the generation id.
    :param status: the normalised state.
    :param raw_status: the service's own word.
    :param video_url: signed URL of the (first) video once completed (it expires: download promptly);
        only an http(s) URL: any other scheme the service answers is dropped (None).
    :param video_urls: every video URL, when the service answered a list (v3 omni).
    :param file_name: the video's file name as the service names it.
    :param file_size: the video's size in bytes, when given.
    :param error: the service's readable reason when failed (URLs in it without their query string).
    :param usage: the ``meta.usage`` block (tokens_used, credits_used, usd_spent).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: GenerationStatus
    raw_status: str | None = None
    video_url: str | None = None
    video_urls: list[str] = Field(default_factory=list)
    file_name: str | None = None
    file_size: int | None = None
    content_type: str | None = None
    duration: float | None = None
    error: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict)

    @field_validator("video_url", mode="before")
    @classmethod
    def _http_video_url(cls, value: Any) -> str | None:
        return None if value is None else usable_video_url(value)

    @field_validator("video_urls", mode="before")
    @classmethod
    def _http_video_urls(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [url for url in map(usable_video_url, value) if url is not None]
        return value

    @field_validator("error", mode="after")
    @classmethod
    def _no_signed_urls_in_error(cls, value: str | None) -> str | None:
        # The service may echo a presigned input URL in its reason; the reason reaches logs and XComs.
        return None if value is None else redact_urls(value)

    @classmethod
    def from_api(cls, body: dict[str, Any], generation_id: str | None = None) -> Generation:
        """Read an answer; missing, null or oddly typed parts are tolerated (coerced or dropped)."""
        raw = body.get("status")
        status = GenerationStatus.from_raw(raw)
        found_id = body.get("id") or body.get("generation_id") or generation_id or ""
        fields: dict[str, Any] = {
            "id": str(found_id) if not isinstance(found_id, (dict, list)) else str(generation_id or ""),
            "status": status,
            "raw_status": None if raw is None else str(raw),
        }
        # Only the parts the answer has are given: a poll of a pending generation (a trigger's every
        # poll) validates three fields, not eleven.
        raw_video = body.get("video")
        if raw_video is not None:
            urls = _video_urls(raw_video)
            first = raw_video[0] if isinstance(raw_video, list) and raw_video else raw_video
            video = first if isinstance(first, dict) else {}
            size = _number_or_none(video.get("file_size"))
            fields.update(
                video_url=urls[0] if urls else None,
                video_urls=urls,
                file_name=_text_or_none(video.get("file_name")),
                file_size=int(size) if size is not None and size >= 0 and size.is_integer() else None,
                content_type=_text_or_none(video.get("content_type")),
                duration=_number_or_none(video.get("duration")),
            )
        message = error_message(body.get("error"))
        if status is GenerationStatus.FAILED and not message:
            message = f"the service ended the generation with status {raw!r} and no message"
        if message is not None:
            fields["error"] = message
        meta = body.get("meta")
        usage = meta.get("usage") if isinstance(meta, dict) else None
        if isinstance(usage, dict):
            fields["usage"] = usage
        return cls(**fields)

    @property
    def is_terminal(self) -> bool:
        return self.status is not GenerationStatus.PENDING
