"""Reading media with PyAV, the emulator's optional encoder: whether it is installed, and durations.

PyAV is imported here, lazily and once; the emulator works without it (the ``emulator`` extra brings
it). :mod:`~airflow_provider_kling.emulator.encoder` encodes with it and
:mod:`~airflow_provider_kling.emulator.clips` reads the length of an avatar's audio with it.
"""

from __future__ import annotations

import io
from typing import Any

from airflow_provider_kling.emulator.constants import log

_av: Any = None
_av_missing = False


def load_av() -> Any:
    """The ``av`` module, or None when PyAV is not installed (said once in the log)."""
    global _av, _av_missing
    if _av is None and not _av_missing:
        try:
            import av  # PyAV: the optional ``emulator`` extra
        except ImportError:
            _av_missing = True
            log.info("PyAV is not installed: the emulator serves its stock sample clip for every request")
        else:
            _av = av
    return _av


def pyav_missing() -> bool:
    """Whether an import of PyAV was tried and failed (False before the first try)."""
    return _av_missing


def media_seconds(data: bytes) -> float | None:
    """The duration of an audio or video file held in memory, or None (unreadable, or no PyAV).

    :param data: the file's bytes.
    """
    av = load_av()
    if av is None:
        return None
    try:
        with av.open(io.BytesIO(data)) as container:
            if container.duration is not None:
                return float(container.duration / av.time_base)
            stream = next(iter(container.streams), None)
            if stream is not None and stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, ValueError, OSError):
        return None
    return None
