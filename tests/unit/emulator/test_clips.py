"""The emulator's clips match the request: duration, aspect, resolution class, audio, omni arrays, timing.

Every clip is read back with PyAV from the bytes the emulator serves over its real HTTP routes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import wave
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_kling.emulator import API_PATH, UNIFIED_PATH, KlingEmulator, pricing
from airflow_provider_kling.emulator.clips import ClipSpec, clip_spec, generation_seconds
from airflow_provider_kling.emulator.encoder import CACHE_ENV, cache_folder, clip_bytes
from airflow_provider_kling.emulator.media import SAMPLE_PATH

av = pytest.importorskip("av", reason="the emulator's clips need PyAV (the emulator extra)")

AUTH = {"Authorization": "Bearer emulator-key"}
URL = "https://example.com/a.png"
V3_T2V = "klingai/video-v3-pro-text-to-video"
V3_STD_T2V = "klingai/video-v3-standard-text-to-video"
OMNI_720 = "klingai/video-v3-omni-720p-text-to-video"
OMNI_1080 = "klingai/video-v3-omni-1080p-text-to-video"


@pytest.fixture(scope="module")
def emu() -> Iterator[KlingEmulator]:
    with KlingEmulator(generation_seconds=60) as emulator:
        yield emulator


def generate(emu: KlingEmulator, body: dict[str, Any], path: str = UNIFIED_PATH) -> tuple[Any, bytes]:
    """POST ``body``, finish it, poll it and download its video: (the video field, the bytes)."""
    created = requests.post(emu.base_url + path, json=body, headers=AUTH, timeout=10)
    assert created.status_code == 201, created.text
    gen_id = created.json()["id"]
    emu.complete(gen_id)
    done = requests.get(
        emu.base_url + path, params={"generation_id": gen_id}, headers=AUTH, timeout=30
    ).json()
    assert done["status"] == "completed", done
    video = done["video"]
    first = video[0] if isinstance(video, list) else video
    data = requests.get(first["url"], timeout=30).content
    assert data == emu.video_data(gen_id)
    return video, data


def probe(data: bytes) -> dict[str, Any]:
    """What PyAV reads in an MP4: duration, frame size, and whether it has an audio stream."""
    with av.open(io.BytesIO(data)) as container:
        (video,) = container.streams.video
        return {
            "seconds": container.duration / av.time_base,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "audio": len(container.streams.audio),
        }


def png_data_uri(width: int, height: int) -> str:
    """A real (tiny, valid) PNG of ``width`` x ``height`` as a data URI."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def test_an_8_second_9_16_request_with_audio_is_8_seconds_9_16_with_sound(emu: KlingEmulator) -> None:
    video, data = generate(
        emu, {"model": V3_T2V, "prompt": "a lighthouse", "duration": 8, "aspect_ratio": "9:16"}
    )

    clip = probe(data)
    assert clip["seconds"] == pytest.approx(8, abs=0.1)
    assert clip["width"] * 16 == clip["height"] * 9
    assert clip["audio"] == 1  # generate_audio defaults to true on v3
    # The answer's duration (what the gallery shows) is the clip's.
    assert video["duration"] == 8
    assert video["file_size"] == len(data)


def test_a_5_second_16_9_request_without_audio_is_silent(emu: KlingEmulator) -> None:
    body = {
        "model": V3_STD_T2V,
        "prompt": "a field",
        "duration": 5,
        "aspect_ratio": "16:9",
        "generate_audio": False,
    }
    video, data = generate(emu, body)

    assert probe(data) == {"seconds": pytest.approx(5, abs=0.1), "width": 256, "height": 144, "audio": 0}
    assert video["duration"] == 5


def test_a_1080p_class_model_makes_larger_frames_than_a_720p_one(emu: KlingEmulator) -> None:
    body = {"prompt": "a city", "duration": 4, "aspect_ratio": "1:1", "generate_audio": False}
    _, small = generate(emu, {**body, "model": OMNI_720})
    _, large = generate(emu, {**body, "model": OMNI_1080})

    # 720p and 1080p scaled down by five, square as asked.
    assert (probe(small)["width"], probe(small)["height"]) == (144, 144)
    assert (probe(large)["width"], probe(large)["height"]) == (216, 216)
    # The model id alone decides: pro and master models are 1080p, standard ones 720p.
    assert clip_spec({"model": "klingai/v2.1-master-text-to-video"}).height == 216
    assert clip_spec({"model": "kling-video/v1/standard/image-to-video"}).height == 144


@pytest.mark.parametrize("answer_style", ["2025", "2026"])
def test_an_omni_model_answers_an_array_whose_clip_matches(answer_style: str) -> None:
    with KlingEmulator(generation_seconds=60, answer_style=answer_style) as emu:
        body = {"model": OMNI_1080, "prompt": "a dancer", "duration": 6, "aspect_ratio": "9:16"}
        video, data = generate(emu, body)

    assert isinstance(video, list)
    assert len(video) == 1
    assert probe(data) == {"seconds": pytest.approx(6, abs=0.1), "width": 216, "height": 384, "audio": 1}


def test_multi_prompt_shots_add_up_and_the_model_default_applies_otherwise(emu: KlingEmulator) -> None:
    shots = [{"prompt": "a door opens", "duration": 4}, {"prompt": "a cat walks in", "duration": 3}]
    video, data = generate(emu, {"model": "klingai/video-v3-turbo-pro-text-to-video", "multi_prompt": shots})
    assert probe(data)["seconds"] == pytest.approx(7, abs=0.1)
    assert video["duration"] == 7
    # Billed as the 7 seconds served, the same as asking for 7 seconds.
    asked = {"model": "klingai/video-v3-turbo-pro-text-to-video", "prompt": "a door", "duration": 7}
    requests.post(emu.base_url + UNIFIED_PATH, json=asked, headers=AUTH, timeout=10).raise_for_status()
    billed = {
        g.body.get("duration"): g.usd
        for g in emu.generations.values()
        if g.prompt in ("a door opens", "a door")
    }
    assert billed[None] == billed[7] > 0

    # The seed model sends "5" as text on the legacy endpoint; v1 standard makes silent 720p clips.
    body = {
        "model": "kling-video/v1/standard/image-to-video",
        "image_url": URL,
        "prompt": "",
        "duration": "10",
    }
    _, data = generate(emu, body, API_PATH)
    assert probe(data) == {"seconds": pytest.approx(10, abs=0.1), "width": 256, "height": 144, "audio": 0}


def test_image_to_video_follows_a_readable_image_else_16_9(emu: KlingEmulator) -> None:
    body = {"model": "klingai/video-v3-standard-image-to-video", "prompt": "p", "generate_audio": False}
    _, portrait = generate(emu, {**body, "image_url": png_data_uri(300, 600)})
    assert (probe(portrait)["width"], probe(portrait)["height"]) == (144, 288)

    _, remote = generate(emu, {**body, "image_url": URL})  # never fetched: 16:9
    assert (probe(remote)["width"], probe(remote)["height"]) == (256, 144)

    # A panorama beyond what the service takes (2.5:1) is capped there.
    assert clip_spec({**body, "image_url": png_data_uri(1000, 100)}).width == 360


def test_an_avatar_lasts_as_long_as_the_audio_it_is_given(emu: KlingEmulator) -> None:
    sound = io.BytesIO()
    with wave.open(sound, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 8000 * 7)
    audio_url = "data:audio/wav;base64," + base64.b64encode(sound.getvalue()).decode()
    video, data = generate(emu, {"model": "klingai/avatar-pro", "image_url": URL, "audio_url": audio_url})

    assert probe(data) == {"seconds": pytest.approx(7, abs=0.1), "width": 384, "height": 216, "audio": 1}
    assert video["duration"] == 7
    # Audio behind a URL is never fetched: the length the emulator bills for it (the same URL, the same).
    body = {"model": "klingai/avatar-pro", "image_url": URL, "audio_url": "https://x/a.mp3"}
    assert clip_spec(body).duration == pricing.variable_seconds(body)


@pytest.mark.parametrize(
    ("body", "audio"),
    [
        ({"model": "klingai/avatar-pro", "image_url": URL, "audio_url": "https://x/a.mp3"}, True),
        ({"model": "klingai/video-v2-6-pro-text-to-video", "prompt": "p"}, True),
        ({"model": "klingai/video-v2-6-pro-text-to-video", "prompt": "p", "generate_audio": False}, False),
        ({"model": "klingai/video-o1-video-to-video-edit", "prompt": "p", "video_url": URL}, False),
        (
            {
                "model": "klingai/video-o1-video-to-video-edit",
                "prompt": "p",
                "video_url": URL,
                "keep_audio": True,
            },
            True,
        ),
        ({"model": "klingai/video-v3-motion-control", "image_url": URL, "video_url": URL}, True),
        (
            {
                "model": "klingai/video-v3-motion-control",
                "image_url": URL,
                "video_url": URL,
                "keep_audio": False,
            },
            False,
        ),
        ({"model": "klingai/video-v3-turbo-pro-text-to-video", "prompt": "p"}, False),
        ({"model": "klingai/v2.5-turbo/pro/text-to-video", "prompt": "p"}, False),
    ],
)
def test_an_audio_track_where_the_model_makes_gives_or_keeps_sound(
    emu: KlingEmulator, body: dict[str, Any], audio: bool
) -> None:
    _, data = generate(emu, body)
    assert probe(data)["audio"] == int(audio)


def test_generation_times_follow_the_model_and_length_scaled_by_generation_seconds() -> None:
    with KlingEmulator(generation_seconds=2.0) as emu:
        for body in (
            {
                "model": "kling-video/v1/standard/image-to-video",
                "image_url": URL,
                "prompt": "",
                "duration": "5",
            },
            {"model": "klingai/v2.1-master-text-to-video", "prompt": "p", "duration": 10},
            {"model": "kling-video/v2.1/pro/image-to-video", "image_url": URL, "duration": 5},
            {"model": V3_T2V, "prompt": "p [seconds:0.5]", "duration": 15},
        ):
            path = API_PATH if body["model"].startswith("kling-video/v1/") else UNIFIED_PATH
            assert requests.post(emu.base_url + path, json=body, headers=AUTH, timeout=10).status_code == 201
        scheduled = {g.model: round(g.ready_at - g.created_at, 6) for g in emu.generations.values()}

    # generation_seconds is the reference: a 5 s v1 standard clip ("about 4-5 minutes", 270 s).
    assert scheduled["kling-video/v1/standard/image-to-video"] == 2.0
    assert scheduled["klingai/v2.1-master-text-to-video"] == pytest.approx(2.0 * 330 / 270 * 2)  # 5-6 min
    assert scheduled["kling-video/v2.1/pro/image-to-video"] == pytest.approx(2.0 * 210 / 270)  # 3-4 min
    assert scheduled[V3_T2V] == 0.5  # a [seconds:N] marker still says exactly how long
    assert generation_seconds(V3_T2V, 15, 0.2) == pytest.approx(0.6)


def test_clips_are_cached_in_memory_and_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    spec = ClipSpec(duration=3, width=102, height=62, audio=True)  # a size no request makes

    first = clip_bytes(spec)
    assert first is not None
    assert clip_bytes(spec) is first  # the same object: not encoded twice
    (cached,) = tmp_path.glob("*.mp4")
    assert cached.read_bytes() == first
    assert cached.name.endswith("-3s-102x62-audio.mp4")

    # Another process reads the disk cache instead of encoding: a planted file proves it.
    planted = ClipSpec(duration=3, width=98, height=62, audio=False)
    name = cached.name.replace("-102x62-audio", "-98x62-silent")
    (tmp_path / name).write_bytes(b"from the cache")
    code = (
        "from airflow_provider_kling.emulator.clips import ClipSpec\n"
        "from airflow_provider_kling.emulator.encoder import clip_bytes\n"
        f"print(clip_bytes(ClipSpec(**{planted.__dict__!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True
    )
    assert out.stdout.strip() == "b'from the cache'"
    assert cache_folder() == tmp_path


def test_without_pyav_the_stock_sample_is_served(tmp_path: Path) -> None:
    # PyAV made unimportable in a fresh process: the emulator still answers, with its sample MP4.
    code = """
import json, sys
sys.modules["av"] = None
import requests
from airflow_provider_kling.emulator import API_PATH, KlingEmulator
auth = {"Authorization": "Bearer emulator-key"}
body = {"model": "klingai/video-v3-pro-text-to-video", "prompt": "p", "duration": 8, "aspect_ratio": "9:16"}
with KlingEmulator(generation_seconds=60) as emu:
    gen_id = requests.post(emu.base_url + API_PATH, json=body, headers=auth, timeout=10).json()["id"]
    emu.complete(gen_id)
    done = requests.get(emu.base_url + API_PATH, params={"generation_id": gen_id}, headers=auth, timeout=10)
    video = done.json()["video"]
    data = requests.get(video["url"], timeout=10).content
    seen = {"size": len(data), "file_size": video["file_size"], "duration": video["duration"]}
    seen["sample"] = data == emu.video_data(gen_id)
    seen["av"] = sys.modules.get("av") is not None
    print(json.dumps(seen))
    open(sys.argv[1], "wb").write(data)
"""
    target = tmp_path / "served.mp4"
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    served = json.loads(out.stdout.strip().splitlines()[-1])
    assert target.read_bytes() == SAMPLE_PATH.read_bytes()
    assert served == {
        "size": SAMPLE_PATH.stat().st_size,
        "file_size": SAMPLE_PATH.stat().st_size,
        "duration": 8,  # what was asked, as before
        "sample": True,
        "av": False,
    }
    assert not (tmp_path / "cache").exists()  # nothing encoded
