"""Video downloads under faults: never a partial or mis-sized file, never outside the folder asked for.

The emulator serves a 3 MiB pattern blob as the video, so a drop really happens mid-file and every
byte written can be checked against :func:`blob_bytes`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from airflow_provider_kling.emulator import KlingEmulator, blob_bytes
from airflow_provider_kling.exceptions import KlingConnectionError, KlingDownloadError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import Generation
from airflow_provider_kling.operators.kling import download
from tests.support.connections import API_KEY, set_connection

if TYPE_CHECKING:
    from collections.abc import Iterator

CONN_ID = "kling_downloads"
VIDEO_BYTES = 3 * 1024 * 1024 + 123
VIDEOS = "/_emulator/videos"
REDIRECT = "/_emulator/redirect"
REQUEST = {
    "model": "kling-video/v1/standard/image-to-video",
    "image_url": "https://example.com/cat.png",
    "prompt": "a cat turns its head",
}
EXPECTED_SHA = hashlib.sha256(blob_bytes(0, VIDEO_BYTES)).hexdigest()


@pytest.fixture(scope="module")
def video_emulator() -> Iterator[KlingEmulator]:
    with KlingEmulator(api_key=API_KEY, generation_seconds=0.2, video_bytes=VIDEO_BYTES) as emu:
        set_connection(CONN_ID, host=emu.base_url, password=API_KEY)
        yield emu


@pytest.fixture
def emu(video_emulator: KlingEmulator) -> Iterator[KlingEmulator]:
    video_emulator.reset()
    yield video_emulator
    video_emulator.reset()


@pytest.fixture
def hook() -> KlingHook:
    return KlingHook(CONN_ID, timeout=(2.0, 5.0), max_attempts=3, retry_min_wait=0.05, retry_max_wait=0.2)


def _completed(hook: KlingHook) -> Generation:
    generation = hook.wait_for_generation(hook.submit_generation(REQUEST), poll_interval=0.05, timeout=30)
    assert generation.video_url
    assert generation.file_size == VIDEO_BYTES
    return generation


def _sha(path: Any) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` but the operator's ``.kling.json`` sidecars."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not p.name.endswith(".kling.json")
    )


@pytest.mark.parametrize("kind", ["reset_mid", "truncated"])
def test_drop_mid_file_is_retried_and_leaves_no_partial_file(
    emu: KlingEmulator, hook: KlingHook, tmp_path: Path, kind: str
) -> None:
    generation = _completed(hook)
    emu.inject(kind, path_prefix=VIDEOS, times=1)
    written = hook.download_video(
        generation.video_url or "",
        f"{tmp_path}/out/",
        file_name="clip.mp4",
        expected_size=generation.file_size,
    )
    assert written == str(tmp_path / "out" / "clip.mp4")
    assert _sha(written) == EXPECTED_SHA
    # The first try stopped half-way; its bytes went to a temporary name that is gone now.
    assert _files(tmp_path) == ["out/clip.mp4"]
    assert emu.count("GET", VIDEOS) == 2
    assert emu.fault_counts == {kind: 1}


@pytest.mark.parametrize("kind", ["reset_mid", "truncated"])
def test_drop_on_every_try_keeps_nothing_and_spares_the_old_file(
    emu: KlingEmulator, hook: KlingHook, tmp_path: Path, kind: str
) -> None:
    generation = _completed(hook)
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"the user's earlier video")
    emu.inject(kind, path_prefix=VIDEOS, times=3)
    with pytest.raises(KlingConnectionError) as info:
        hook.download_video(
            generation.video_url or "", target, expected_size=generation.file_size, overwrite=True, attempts=3
        )
    # A Content-Length the body never reached is an error, whichever way the connection ended.
    assert "video download" in str(info.value)
    assert target.read_bytes() == b"the user's earlier video"
    assert _files(tmp_path) == ["clip.mp4"]
    assert emu.count("GET", VIDEOS) == 3


def test_size_disagreeing_with_file_size_is_refused(
    emu: KlingEmulator, hook: KlingHook, tmp_path: Path
) -> None:
    generation = _completed(hook)
    # The server sends 1000 bytes fewer, with a Content-Length that matches them: only file_size tells.
    emu.inject("wrong_length", path_prefix=VIDEOS, times=1)
    with pytest.raises(KlingDownloadError) as info:
        hook.download_video(
            generation.video_url or "", tmp_path / "clip.mp4", expected_size=generation.file_size
        )
    assert f"file_size {VIDEO_BYTES}" in str(info.value)
    assert f"{VIDEO_BYTES - 1000} bytes" in str(info.value)
    assert _files(tmp_path) == []
    # A size mismatch is not a network blip: no second download of the same wrong file.
    assert emu.count("GET", VIDEOS) == 1


def test_full_file_disagreeing_with_announced_size_is_refused(
    emu: KlingEmulator, hook: KlingHook, tmp_path: Path
) -> None:
    generation = _completed(hook)
    with pytest.raises(KlingDownloadError, match="file_size"):
        hook.download_video(generation.video_url or "", tmp_path / "clip.mp4", expected_size=VIDEO_BYTES + 1)
    assert _files(tmp_path) == []


def test_missing_folders_are_created(emu: KlingEmulator, hook: KlingHook, tmp_path: Path) -> None:
    generation = _completed(hook)
    url = generation.video_url or ""
    as_folder = hook.download_video(url, f"{tmp_path}/a/b/c/", file_name="clip.mp4")
    as_file = hook.download_video(url, tmp_path / "x" / "y" / "named.mp4")
    assert as_folder == str(tmp_path / "a" / "b" / "c" / "clip.mp4")
    assert as_file == str(tmp_path / "x" / "y" / "named.mp4")
    assert _sha(as_folder) == _sha(as_file) == EXPECTED_SHA
    assert _files(tmp_path) == ["a/b/c/clip.mp4", "x/y/named.mp4"]


def test_existing_file_is_kept_unless_overwrite(emu: KlingEmulator, hook: KlingHook, tmp_path: Path) -> None:
    generation = _completed(hook)
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(KlingDownloadError, match="already exists; pass overwrite=True"):
        hook.download_video(generation.video_url or "", target)
    assert target.read_bytes() == b"precious"
    assert emu.count("GET", VIDEOS) == 0
    hook.download_video(generation.video_url or "", target, overwrite=True)
    assert _sha(target) == EXPECTED_SHA
    assert _files(tmp_path) == ["clip.mp4"]


def _run_dag(dag: Any, out: Path, log: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("KLING_BAD_INPUT_LOG", str(log))
    run = dag.test(run_conf={"out": str(out)})
    failures = {}
    if log.exists():
        failures = {f["task_id"]: f for f in map(json.loads, log.read_text().splitlines())}
    return {"states": {ti.task_id: ti.state for ti in run.get_task_instances()}, "failures": failures}


def test_operator_overwrites_only_when_asked(
    emu: KlingEmulator, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dags.bad_input_downloads import dag

    out = tmp_path / "out"
    out.mkdir()
    (out / "existing.mp4").write_bytes(b"keep me")
    (out / "replaced.mp4").write_bytes(b"replace me")
    result = _run_dag(dag, out, tmp_path / "failures.jsonl", monkeypatch)

    assert result["states"] == {
        "keep_existing": "failed",
        "replace_existing": "success",
        "new_folders": "success",
    }
    failure = result["failures"]["keep_existing"]
    # Refused before the paid POST: only the two other tasks submitted a generation.
    assert "existing.mp4 already exists; set overwrite=True to replace it" in failure["message"]
    assert emu.count("POST") == 2
    assert (out / "existing.mp4").read_bytes() == b"keep me"
    assert _sha(out / "replaced.mp4") == EXPECTED_SHA
    (new_file,) = (out / "new" / "nested" / "folders").glob("*.mp4")
    assert new_file.suffix == ".mp4"
    assert _sha(new_file) == EXPECTED_SHA
    assert len(_files(out)) == 3
    # The refused download was never fetched; the two others were, once each.
    assert emu.count("GET", VIDEOS) == 2


def test_operator_keeps_a_hostile_generation_id_inside_the_folder(
    emu: KlingEmulator, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dags.bad_input_downloads import hostile_dag

    escape = f"kling-escape-{uuid.uuid4().hex[:8]}"
    hostile = f"x/../../../../../../../../tmp/{escape}"
    emu.queue_ids(hostile)
    out = tmp_path / "out"
    result = _run_dag(hostile_dag, out, tmp_path / "failures.jsonl", monkeypatch)

    assert result["states"] == {"hostile_id": "success"}
    assert hostile in emu.generations
    (written,) = (out / "clips").glob("*.mp4")
    assert written.parent == out / "clips"
    assert "/" not in written.name
    assert not written.name.startswith(".")
    assert written.name.endswith(f"tmp_{escape}.mp4")
    assert _sha(written) == EXPECTED_SHA
    for folder in (tmp_path, tmp_path.parent, tmp_path.parent.parent, Path("/tmp")):
        assert not list(folder.glob(f"{escape}*"))


def test_download_helper_sanitises_a_hostile_id(emu: KlingEmulator, hook: KlingHook, tmp_path: Path) -> None:
    hostile = "gen/../../../etc/cron.d/kling"
    emu.queue_ids(hostile)
    generation = _completed(hook)
    assert generation.id == hostile
    folder = tmp_path / "videos"
    written = download(hook, generation, f"{folder}/", overwrite=False)
    assert written == str(folder / "gen_.._.._.._etc_cron.d_kling.mp4")
    assert _files(tmp_path) == ["videos/gen_.._.._.._etc_cron.d_kling.mp4"]
    assert _sha(written) == EXPECTED_SHA


def test_service_id_with_dots_and_slashes_is_polled_as_opaque_text(
    emu: KlingEmulator, hook: KlingHook, tmp_path: Path
) -> None:
    # Ids are opaque: sent URL-encoded in the query, so "../" cannot reach a path; the file name
    # built from it stays inside the folder asked for.
    emu.queue_ids("../../etc/passwd")
    generation_id = hook.submit_generation(REQUEST)
    assert generation_id == "../../etc/passwd"
    done = hook.wait_for_generation(generation_id, poll_interval=0.05, timeout=30)
    polls = [r for r in emu.requests if r.method == "GET" and not r.path.startswith(VIDEOS)]
    assert polls
    assert {r.query.get("generation_id") for r in polls} == {"../../etc/passwd"}
    assert {r.path for r in polls} == {"/v2/generate/video/kling/generation"}
    written = download(hook, done, f"{tmp_path}/videos/", overwrite=False)
    assert Path(written).parent == tmp_path / "videos"
    assert _files(tmp_path) == [f"videos/{Path(written).name}"]


def test_redirect_to_http_is_followed(emu: KlingEmulator, hook: KlingHook, tmp_path: Path) -> None:
    generation = _completed(hook)
    url = f"{emu.base_url}{REDIRECT}?to={quote(generation.video_url or '', safe='')}"
    written = hook.download_video(url, tmp_path / "clip.mp4", expected_size=VIDEO_BYTES)
    assert _sha(written) == EXPECTED_SHA
    assert emu.count("GET", REDIRECT) == 1
    assert emu.count("GET", VIDEOS) == 1


@pytest.mark.parametrize(
    "target", ["file:///etc/passwd", "ftp://example.com/output.mp4", "gopher://127.0.0.1:25/x", "data:,hello"]
)
def test_redirect_to_another_scheme_is_refused(
    emu: KlingEmulator, hook: KlingHook, tmp_path: Path, target: str
) -> None:
    url = f"{emu.base_url}{REDIRECT}?to={quote(target, safe='')}"
    with pytest.raises(KlingDownloadError, match=r"only http\(s\) URLs are followed"):
        hook.download_video(url, tmp_path / "clip.mp4")
    assert _files(tmp_path) == []
    assert emu.count("GET", REDIRECT) == 1


def test_redirect_loop_is_cut(emu: KlingEmulator, hook: KlingHook, tmp_path: Path) -> None:
    url = f"{emu.base_url}/_emulator/videos/none/output.mp4"
    for _ in range(7):
        url = f"{emu.base_url}{REDIRECT}?to={quote(url, safe='')}"
    with pytest.raises(KlingDownloadError, match="more than 5 redirects"):
        hook.download_video(url, tmp_path / "clip.mp4")
    assert _files(tmp_path) == []
    assert emu.count("GET", REDIRECT) == 6


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/output.mp4"])
def test_non_http_video_url_is_refused_before_any_request(
    emu: KlingEmulator, hook: KlingHook, tmp_path: Path, url: str
) -> None:
    with pytest.raises(KlingDownloadError, match=r"only http\(s\)"):
        hook.download_video(url, tmp_path / "clip.mp4")
    assert _files(tmp_path) == []
    assert emu.count() == 0
