"""A hook for tests (tiny retry waits) and the request most tests send."""

from __future__ import annotations

from typing import Any

from airflow_provider_kling.hooks.kling import KlingHook

MODEL = "kling-video/v1/standard/image-to-video"
REQUEST = {"model": MODEL, "image_url": "https://example.com/cat.png", "prompt": "a cat turns its head"}


def make_hook(conn_id: str = "kling_default", **kwargs: Any) -> KlingHook:
    """A hook with tiny retry waits so retried calls stay fast."""
    kwargs.setdefault("retry_min_wait", 0.05)
    kwargs.setdefault("retry_max_wait", 0.2)
    return KlingHook(conn_id, **kwargs)
