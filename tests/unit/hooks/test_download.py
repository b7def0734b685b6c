"""KlingHook.download_video: integrity checks, retries and destinations, against the emulator."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling.emulator.app import SAMPLE_PATH, VIDEO_PREFIX
from airflow_provider_kling.emulator.clips import clip_spec
from airflow_provider_kling.emulator.media import video_data
from airflow_provider_kling.exceptions import KlingConnectionError, KlingDownloadError
from airflow_provider_kling.models import Generation
from tests.support.hooks import REQUEST, completed_generation, make_hook

#: What the emulator serves for REQUEST: its 5 s 16:9 clip (the stock sample MP4 without PyAV).
CLIP = video_data(clip_spec(REQUEST), SAMPLE_PATH.read_bytes())


@pytest.fixture
def video(emulator: Any) -> Generation:
    """A completed generation whose video the emulator serves."""
    generation = completed_generation(emulator)
    assert generation.video_url
    assert generation.file_size == len(CLIP)
    assert emulator.video_data(generation.id) == CLIP
    return generation


def downloads(emulator: Any) -> int:
    return int(emulator.count("GET", path=VIDEO_PREFIX))


def test_download_into_a_folder(emulator: Any, video: Generation, tmp_path: Path) -> None:
    written = make_hook().download_video(video.video_url or "", tmp_path, expected_size=video.file_size)

    assert written == str(tmp_path / "output.mp4")
    assert (tmp_path / "output.mp4").read_bytes() == CLIP
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output.mp4"]
    assert downloads(emulator) == 1
    # The video's host never gets the API key (the emulator marks key-less downloads with None).
    assert [r.auth_ok for r in emulator.requests if r.path.startswith(VIDEO_PREFIX)] == [None]


def test_download_to_a_file_path_and_a_named_file(emulator: Any, video: Generation, tmp_path: Path) -> None:
    hook = make_hook()
    target = tmp_path / "clip.mp4"
    assert hook.download_video(video.video_url or "", target) == str(target)
    assert target.read_bytes() == CLIP

    named = hook.download_video(video.video_url or "", tmp_path, file_name="../../evil name.mp4")
    # Names from outside never escape the folder.
    assert Path(named) == tmp_path / "evil_name.mp4"
    assert Path(named).read_bytes() == CLIP


def test_missing_folders_are_created(emulator: Any, video: Generation, tmp_path: Path) -> None:
    hook = make_hook()
    folder = tmp_path / "a" / "b" / "c"
    written = hook.download_video(video.video_url or "", f"{folder}/")
    assert written == str(folder / "output.mp4")
    assert (folder / "output.mp4").read_bytes() == CLIP

    deep_file = tmp_path / "x" / "y" / "clip.mp4"
    assert hook.download_video(video.video_url or "", deep_file) == str(deep_file)
    assert deep_file.read_bytes() == CLIP


def test_size_mismatch_keeps_nothing(emulator: Any, video: Generation, tmp_path: Path) -> None:
    with pytest.raises(KlingDownloadError) as info:
        make_hook().download_video(video.video_url or "", tmp_path, expected_size=len(CLIP) + 1)

    size = len(CLIP)
    assert f"video is {size} bytes but the API announced file_size {size + 1}" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part leftover
    assert downloads(emulator) == 1  # a wrong size is not a network error: not retried


def test_short_body_with_matching_content_length_is_caught_by_file_size(
    emulator: Any, video: Generation, tmp_path: Path
) -> None:
    emulator.inject("wrong_length", path_prefix=VIDEO_PREFIX)

    with pytest.raises(KlingDownloadError):
        make_hook().download_video(video.video_url or "", tmp_path, expected_size=video.file_size)

    assert list(tmp_path.iterdir()) == []
    assert emulator.fault_counts == {"wrong_length": 1}


@pytest.mark.parametrize("kind", ["reset_mid", "truncated"])
def test_dropped_download_with_one_attempt_leaves_no_file(
    emulator: Any, video: Generation, tmp_path: Path, kind: str
) -> None:
    emulator.inject(kind, path_prefix=VIDEO_PREFIX)

    with pytest.raises(KlingConnectionError) as info:
        make_hook().download_video(video.video_url or "", tmp_path, attempts=1)

    assert "video download" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    assert downloads(emulator) == 1


@pytest.mark.parametrize("kind", ["reset_mid", "truncated", "503"])
def test_dropped_download_is_retried(emulator: Any, video: Generation, tmp_path: Path, kind: str) -> None:
    emulator.inject(kind, path_prefix=VIDEO_PREFIX)

    written = make_hook().download_video(
        video.video_url or "", tmp_path, attempts=2, expected_size=video.file_size
    )

    assert Path(written).read_bytes() == CLIP
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output.mp4"]
    assert downloads(emulator) == 2


def test_existing_file_is_kept_unless_overwrite(emulator: Any, video: Generation, tmp_path: Path) -> None:
    target = tmp_path / "output.mp4"
    target.write_bytes(b"an earlier run's video")
    hook = make_hook()

    with pytest.raises(KlingDownloadError) as info:
        hook.download_video(video.video_url or "", tmp_path)
    assert "already exists" in str(info.value)
    assert "overwrite=True" in str(info.value)
    assert target.read_bytes() == b"an earlier run's video"
    assert downloads(emulator) == 0

    assert hook.download_video(video.video_url or "", tmp_path, overwrite=True) == str(target)
    assert target.read_bytes() == CLIP
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output.mp4"]


def test_unknown_video_url_is_a_download_error(emulator: Any, tmp_path: Path) -> None:
    url = f"{emulator.base_url}{VIDEO_PREFIX}/no-such-token/output.mp4?signature=s3cr3t"
    with pytest.raises(KlingDownloadError) as info:
        make_hook().download_video(url, tmp_path)
    assert "answered 404" in str(info.value)
    assert "s3cr3t" not in str(info.value)  # signed query strings stay out of errors
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def memory_folder() -> str:
    """A fresh folder URL in fsspec's in-memory store, attached the way a user attaches any fs."""
    import fsspec

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach

    # No installed provider registers the memory:// protocol.
    attach("memory", fs=fsspec.filesystem("memory"))
    return f"memory://kling-tests/{uuid.uuid4().hex}/videos/"


def test_download_to_an_fsspec_folder_url(emulator: Any, video: Generation, memory_folder: str) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    hook = make_hook()
    written = hook.download_video(video.video_url or "", memory_folder, expected_size=video.file_size)

    # Compared as ObjectStoragePath spells it: Airflow 2's writes memory:///, Airflow 3's memory://.
    assert written == str(ObjectStoragePath(memory_folder + "output.mp4"))
    assert ObjectStoragePath(written).read_bytes() == CLIP
    assert [p.name for p in ObjectStoragePath(memory_folder).iterdir()] == ["output.mp4"]
    with pytest.raises(KlingDownloadError):
        hook.download_video(video.video_url or "", memory_folder)


def test_download_to_object_storage_paths(emulator: Any, video: Generation, memory_folder: str) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    hook = make_hook()
    file_target = ObjectStoragePath(memory_folder + "clip.mp4")
    assert hook.download_video(video.video_url or "", file_target) == str(file_target)
    assert file_target.read_bytes() == CLIP

    # An ObjectStoragePath drops a trailing "/", so a folder is one that exists.
    folder = ObjectStoragePath(memory_folder + "existing")
    folder.mkdir(parents=True)
    written = hook.download_video(video.video_url or "", folder, expected_size=video.file_size)
    assert written == str(ObjectStoragePath(memory_folder + "existing/output.mp4"))
    assert ObjectStoragePath(written).read_bytes() == CLIP

    with pytest.raises(KlingDownloadError):
        hook.download_video(video.video_url or "", folder, expected_size=len(CLIP) - 1, overwrite=True)
    # The failed try left neither a .part file nor a changed video behind.
    assert [p.name for p in folder.iterdir()] == ["output.mp4"]
    assert ObjectStoragePath(written).read_bytes() == CLIP
