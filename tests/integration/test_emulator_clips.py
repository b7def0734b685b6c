"""Through KlingHook: the emulator's clips match the request, and what the gallery and sidecars say agrees.

The hook submits, polls and downloads as in a DAG; PyAV reads the downloaded file back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling.utils.artifacts import download, read_sidecar
from airflow_provider_kling.utils.results import result_dict
from tests.support.hooks import make_hook

av = pytest.importorskip("av", reason="the emulator's clips need PyAV (the emulator extra)")


def probe(path: str) -> dict[str, Any]:
    with av.open(path) as container:
        (video,) = container.streams.video
        return {
            "seconds": round(container.duration / av.time_base, 1),
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "audio": len(container.streams.audio),
        }


def generate(emulator: Any, request: dict[str, Any], folder: Path) -> tuple[dict[str, Any], str]:
    """Submit ``request`` through the hook, finish it, download it with its sidecar: (XCom dict, path)."""
    hook = make_hook()
    generation_id = hook.submit_generation(request)
    emulator.complete(generation_id)
    generation = hook.get_generation(generation_id)
    path = download(hook, generation, folder, False, sidecar={"model": request["model"]})
    asked = request.get("duration")
    return result_dict(generation, request["model"], path, duration=asked), path


def test_an_8_second_9_16_clip_with_audio_through_the_hook(emulator: Any, tmp_path: Path) -> None:
    request = {
        "model": "klingai/video-v3-pro-text-to-video",
        "prompt": "a cat turns its head",
        "duration": 8,
        "aspect_ratio": "9:16",
        "generate_audio": True,
    }
    result, path = generate(emulator, request, tmp_path)

    clip = probe(path)
    assert clip == {"seconds": 8.0, "width": 216, "height": 384, "audio": 1}
    # The gallery shows the XCom's duration and the player reads the file: both 8 s.
    assert result["duration"] == clip["seconds"] == 8
    sidecar = read_sidecar(Path(path))
    assert sidecar is not None
    assert sidecar["file_size"] == result["file_size"] == Path(path).stat().st_size
    assert Path(path).read_bytes() == emulator.video_data(result["generation_id"])

    # Image to video: the image is a URL the emulator does not fetch, so 16:9.
    del request["aspect_ratio"]
    request.update(model="klingai/video-v3-pro-image-to-video", image_url="https://example.com/cat.png")
    result, path = generate(emulator, request, tmp_path / "i2v")
    assert probe(path) == {"seconds": 8.0, "width": 384, "height": 216, "audio": 1}
    assert result["duration"] == 8


def test_an_omni_clip_through_the_hook_is_a_list_whose_first_video_matches(
    emulator: Any, tmp_path: Path
) -> None:
    request = {
        "model": "klingai/video-v3-omni-1080p-text-to-video",
        "prompt": "a dancer",
        "duration": 5,
        "aspect_ratio": "16:9",
        "generate_audio": False,
    }
    result, path = generate(emulator, request, tmp_path)

    assert result["video_urls"] == [result["video_url"]]
    assert probe(path) == {"seconds": 5.0, "width": 384, "height": 216, "audio": 0}
    assert result["duration"] == 5
