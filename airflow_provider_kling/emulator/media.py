"""The bytes the emulator serves as videos: clips that match the request, the sample MP4, pattern
blobs, and Range parsing.

A generation's video is the clip its request asks for (:func:`video_data`, encoded by
:mod:`~airflow_provider_kling.emulator.encoder` when PyAV is installed), else the stock sample MP4.
A blob is virtual: :func:`blob_bytes` computes any window of it, so a 1 TiB video costs no memory and
a test can check every byte it downloaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from airflow_provider_kling.emulator import encoder
from airflow_provider_kling.emulator.clips import ClipSpec

SAMPLE_PATH = Path(__file__).with_name("sample.mp4")
CHUNK = 1024 * 1024
SAMPLE_CHUNK = 64 * 1024
MAX_BLOB = 1 << 40

# Byte i of every blob is (i % 251) + 1: non-zero, position-dependent (so reordering or gaps are
# detectable) and any window of up to CHUNK bytes is one slice of this buffer: constant memory.
_BLOB_PERIOD = 251
_BLOB_PATTERN = bytes(range(1, _BLOB_PERIOD + 1)) * (CHUNK // _BLOB_PERIOD + 2)


def video_data(clip: ClipSpec | None, sample: bytes) -> bytes:
    """The MP4 served for a generation's ``clip``: encoded to match it, or ``sample`` without PyAV.

    :param clip: the generation's clip, None for the stock sample.
    :param sample: the stock sample MP4.
    """
    return (encoder.clip_bytes(clip) if clip is not None else None) or sample


async def video_data_async(clip: ClipSpec | None, sample: bytes) -> bytes:
    """:func:`video_data` without blocking the server's loop while a clip is first encoded.

    :param clip: the generation's clip, None for the stock sample.
    :param sample: the stock sample MP4.
    """
    if clip is None or encoder.is_cached(clip):
        return video_data(clip, sample)
    return await asyncio.to_thread(video_data, clip, sample)


def blob_bytes(offset: int, length: int) -> bytes:
    """Return the bytes ``/_emulator/blob/{n}`` serves at ``offset`` (to verify downloads).

    :param offset: first byte position.
    :param length: number of bytes wanted.
    """
    parts = []
    pos, end = offset, offset + length
    while pos < end:
        n = min(CHUNK, end - pos)
        start = pos % _BLOB_PERIOD
        parts.append(_BLOB_PATTERN[start : start + n])
        pos += n
    return b"".join(parts)


class _Body:
    """A response body: either bytes in memory or a virtual blob of ``size`` pattern bytes."""

    def __init__(self, data: bytes | None = None, blob_size: int | None = None) -> None:
        self.data = data
        self.size = len(data) if data is not None else int(blob_size or 0)

    def chunks(self, start: int, stop: int) -> Iterator[bytes]:
        if self.data is not None:
            for pos in range(start, stop, SAMPLE_CHUNK):
                yield self.data[pos : min(pos + SAMPLE_CHUNK, stop)]
            return
        for pos in range(start, stop, CHUNK):
            n = min(CHUNK, stop - pos)
            first = pos % _BLOB_PERIOD
            yield _BLOB_PATTERN[first : first + n]


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """Parse a single ``bytes=`` range: (start, stop), "invalid" (416) or None (serve everything)."""
    # Not aiohttp's ``request.http_range``: it reads ``bytes=-0`` as ``bytes=0-`` (a 206 of everything,
    # not a 416), raises the same ValueError for ``bytes=5-3`` (a 416 here) as for syntax served whole,
    # and differs on case and spaces. ``web.FileResponse`` does not fit either: bodies are in memory
    # or virtual blobs, and download faults mangle them while they are sent.
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[6:].strip().partition("-")
    if not sep:
        return None
    try:
        if not first:  # suffix range: the last N bytes
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size > 0 else "invalid"
        start = int(first)
        stop = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or stop <= start:
        return "invalid"
    return start, min(stop, size)
