"""Encoding the emulator's clips with PyAV, cached in memory and on disk.

:func:`clip_bytes` turns a :class:`~airflow_provider_kling.emulator.clips.ClipSpec` into an MP4
(H.264 video of a scrolling gradient with a progress bar, and a quiet 500 Hz AAC tone when the clip has
sound). PyAV (``pip install 'airflow-provider-kling[emulator]'``, FFmpeg inside its wheel) is imported
by :mod:`~airflow_provider_kling.emulator.probe` only when a clip is first needed; without it
:func:`clip_bytes` returns None and the emulator serves its stock sample MP4.

Each distinct clip is encoded once per process (memory) and once per machine (files under
:func:`cache_folder`), so a test suite creating hundreds of generations encodes a handful of clips.
"""

from __future__ import annotations

import array
import contextlib
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from airflow_provider_kling.emulator.clips import FPS, ClipSpec
from airflow_provider_kling.emulator.constants import log
from airflow_provider_kling.emulator.probe import load_av, pyav_missing

#: Bump when the clips' content or encoding changes: old cache files are then ignored.
ENCODER_VERSION = 1
#: Where encoded clips are kept between processes (default: the user's cache folder).
CACHE_ENV = "KLING_EMULATOR_CLIP_CACHE"
AUDIO_RATE = 16_000
#: 500 Hz at 16 kHz is 32 samples a period: every 1024-sample AAC frame holds whole periods.
TONE_HZ = 500
TONE_LEVEL = 0.05  # quiet: about -26 dBFS

_memory: dict[ClipSpec, bytes] = {}
_lock = threading.Lock()


def available() -> bool:
    """Whether PyAV can be imported (the emulator's clips match requests only then)."""
    return load_av() is not None


def cache_folder() -> Path:
    """The folder of encoded clips: ``$KLING_EMULATOR_CLIP_CACHE``, else the user's cache folder."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "airflow-provider-kling" / "emulator-clips"


def is_cached(spec: ClipSpec) -> bool:
    """Whether :func:`clip_bytes` answers ``spec`` from memory (no encode, no disk read).

    :param spec: the clip's duration, frame size and audio.
    """
    return spec in _memory or pyav_missing()


def clip_bytes(spec: ClipSpec) -> bytes | None:
    """The MP4 for ``spec``, encoded once and then served from the caches; None without PyAV.

    :param spec: the clip's duration, frame size and audio.
    """
    cached = _memory.get(spec)
    if cached is not None:
        return cached
    av = load_av()
    if av is None:
        return None
    with _lock:  # one encode per clip, however many generations ask at once
        cached = _memory.get(spec)
        if cached is None:
            cached = _read_cache(spec, av.__version__)
        if cached is None:
            cached = encode(spec)
            _write_cache(spec, av.__version__, cached)
        _memory[spec] = cached
    return cached


def encode(spec: ClipSpec) -> bytes:
    """Encode ``spec`` as an MP4 (no cache); PyAV must be installed.

    :param spec: the clip's duration, frame size and audio.
    """
    av = load_av()
    if av is None:
        raise RuntimeError("PyAV is not installed: pip install 'airflow-provider-kling[emulator]'")
    fd, name = tempfile.mkstemp(suffix=".mp4", prefix="kling-clip-")
    os.close(fd)
    try:
        # A file rather than memory: faststart (the index first, so players start at once) rereads it.
        with av.open(name, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            video = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "32"})
            video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
            audio = out.add_stream("aac", rate=AUDIO_RATE, layout="mono") if spec.audio else None
            if audio is not None:
                audio.bit_rate = 24_000
            _encode_video(av, out, video, spec)
            if audio is not None:
                _encode_audio(av, out, audio, spec.duration * AUDIO_RATE)
        return Path(name).read_bytes()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _encode_video(av: Any, out: Any, stream: Any, spec: ClipSpec) -> None:
    frames = spec.duration * FPS
    bar = max(2, spec.height // 12)
    for index in range(frames):
        frame = av.VideoFrame(spec.width, spec.height, "yuv420p")
        luma = frame.planes[0]
        pad = luma.line_size - spec.width
        # A gradient that scrolls (motion to look at) over a bar that fills as the clip plays.
        shift = index * 4
        row = bytes(16 + (x * 2 + shift) % 200 for x in range(spec.width)) + bytes(pad)
        done = spec.width * (index + 1) // frames
        bar_row = b"\xeb" * done + b"\x10" * (spec.width - done) + bytes(pad)
        luma.update(row * (spec.height - bar) + bar_row * bar)
        for chroma, value in zip(frame.planes[1:], (100, 150), strict=True):
            chroma.update(bytes((value,)) * chroma.buffer_size)
        frame.pts = index
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _encode_audio(av: Any, out: Any, stream: Any, total: int) -> None:
    size = stream.codec_context.frame_size or 1024
    step = 2 * math.pi * TONE_HZ / AUDIO_RATE
    wave = array.array("f", (TONE_LEVEL * math.sin(step * k) for k in range(size)))
    samples = wave.tobytes()
    pos = 0
    while pos < total:
        count = min(size, total - pos)
        frame = av.AudioFrame(format="fltp", layout="mono", samples=count)
        plane = frame.planes[0]
        data = samples[: count * wave.itemsize]
        plane.update(data + bytes(plane.buffer_size - len(data)))
        frame.sample_rate = AUDIO_RATE
        frame.pts = pos
        out.mux(stream.encode(frame))
        pos += count
    out.mux(stream.encode(None))


def _cache_path(spec: ClipSpec, av_version: str) -> Path:
    sound = "audio" if spec.audio else "silent"
    name = f"v{ENCODER_VERSION}-av{av_version}-{spec.duration}s-{spec.width}x{spec.height}-{sound}.mp4"
    return cache_folder() / name


def _read_cache(spec: ClipSpec, av_version: str) -> bytes | None:
    try:
        data = _cache_path(spec, av_version).read_bytes()
    except OSError:
        return None
    return data or None


def _write_cache(spec: ClipSpec, av_version: str, data: bytes) -> None:
    # A cache only: when the folder cannot be written, the clip is encoded again next process.
    path = _cache_path(spec, av_version)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache folder may be shared
        os.replace(tmp, path)  # atomic: another process reads the whole file or none
    except OSError as exc:
        log.debug("Could not keep the clip %s in the cache: %s", path.name, exc)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
