"""A hook for tests (tiny retry waits), the request most tests send, and a completed generation of it."""

from __future__ import annotations

from typing import Any

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import Generation

MODEL = "kling-video/v1/standard/image-to-video"
REQUEST = {"model": MODEL, "image_url": "https://example.com/cat.png", "prompt": "a cat turns its head"}


def make_hook(conn_id: str = "kling_default", **kwargs: Any) -> KlingHook:
    """A hook with tiny retry waits so retried calls stay fast."""
    kwargs.setdefault("retry_min_wait", 0.05)
    kwargs.setdefault("retry_max_wait", 0.2)
    return KlingHook(conn_id, **kwargs)


def completed_generation(emulator: Any, hook: KlingHook | None = None) -> Generation:
    """Submit :data:`REQUEST`, let the emulator complete it at once, and read the generation back.

    :param emulator: the running emulator the hook's connection points at.
    :param hook: the hook to use (default: :func:`make_hook`).
    """
    hook = hook or make_hook()
    generation_id = hook.submit_generation(REQUEST)
    emulator.complete(generation_id)
    return hook.get_generation(generation_id)
