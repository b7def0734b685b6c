"""Downloaded videos and their ``.kling.json`` sidecars: what ``skip_existing`` reuses, and retries
that find a video whose sidecar is missing.

The DAGs (tests/dags/kling_sidecars.py) run through ``dag.test()`` against emulators over real
sockets; the POSTs each emulator received say what was paid for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling.emulator import KlingEmulator
from airflow_provider_kling.exceptions import KlingDownloadError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import Generation, GenerationStatus
from airflow_provider_kling.operators.kling import download, sidecar_path
from tests.support.connections import API_KEY, GENERATION_SECONDS, connection_json
from tests.support.dags import TEST_DAGS, failure_events, load_dag_file, posts, run_dag

# dag.test() from a bundle, task_state_store and airflow.sdk DAGs: Airflow 3 only.
pytestmark = pytest.mark.airflow3


@pytest.fixture
def test_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the test DAGs download to and record their failures."""
    monkeypatch.setenv("KLING_TEST_OUT", str(tmp_path))
    return tmp_path


def use_service(monkeypatch: pytest.MonkeyPatch, emu: Any) -> None:
    """Point the ``kling_sidecars`` connection at ``emu``."""
    monkeypatch.setenv("AIRFLOW_CONN_KLING_SIDECARS", connection_json(host=emu.base_url, password=API_KEY))


def sidecar_of(video_path: str) -> dict[str, Any]:
    return json.loads(sidecar_path(Path(video_path)).read_text())


def video_downloads(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.path.startswith(("/_emulator/videos/", "/_emulator/blob/"))]


def test_skip_existing_reuses_only_a_video_made_by_the_same_service(
    emulator, airflow_db, test_out, monkeypatch
):
    module = load_dag_file(TEST_DAGS / "kling_sidecars.py")
    use_service(monkeypatch, emulator)
    first = run_dag(module.skip_dag)
    assert first.state == "success"
    made = first.xcom("skip")
    assert made["reused"] is False
    assert sidecar_of(made["video_path"])["base_url"] == emulator.base_url

    # The same service again: reused, nothing paid (the control for what follows).
    again = run_dag(module.skip_dag)
    assert again.xcom("skip")["reused"] is True
    assert again.xcom("skip")["video_path"] == made["video_path"]
    assert len(posts(emulator)) == 1

    # Another service (another host:port) with the same request and folder: generated there anew.
    with KlingEmulator(api_key=API_KEY, generation_seconds=GENERATION_SECONDS) as other:
        use_service(monkeypatch, other)
        elsewhere = run_dag(module.skip_dag)
        assert elsewhere.state == "success"
        out = elsewhere.xcom("skip")
        assert len(posts(other)) == 1
        assert out["reused"] is False
        assert out["video_path"] != made["video_path"]
        assert Path(out["video_path"]).read_bytes() == other.video_data(out["generation_id"])
        assert sidecar_of(out["video_path"])["base_url"] == other.base_url
    assert len(posts(emulator)) == 1


def test_a_sidecar_of_an_earlier_version_without_its_service_is_reused_with_a_warning(
    emulator, airflow_db, test_out, monkeypatch
):
    """Refusing sidecars that name no service would bill every video made before the upgrade again."""
    module = load_dag_file(TEST_DAGS / "kling_sidecars.py")
    use_service(monkeypatch, emulator)
    made = run_dag(module.skip_dag).xcom("skip")
    record = sidecar_of(made["video_path"])
    del record["base_url"]
    sidecar_path(Path(made["video_path"])).write_text(json.dumps(record))

    again = run_dag(module.skip_dag)
    assert again.state == "success"
    assert again.xcom("skip")["reused"] is True
    assert len(posts(emulator)) == 1


def test_skip_existing_generates_anew_when_the_sidecar_names_another_request(
    emulator, airflow_db, test_out, monkeypatch
):
    module = load_dag_file(TEST_DAGS / "kling_sidecars.py")
    use_service(monkeypatch, emulator)
    first = run_dag(module.skip_dag)
    made = first.xcom("skip")
    (_post,) = posts(emulator)

    # The folder's video now claims to come from another request (another prompt, image or field).
    record = sidecar_of(made["video_path"])
    assert record["request"]
    record["request"] = "0" * len(record["request"])
    sidecar_path(Path(made["video_path"])).write_text(json.dumps(record))

    second = run_dag(module.skip_dag)
    assert second.state == "success"
    out = second.xcom("skip")
    assert len(posts(emulator)) == 2
    assert out["reused"] is False
    assert out["generation_id"] != made["generation_id"]
    assert out["video_path"] != made["video_path"]


@pytest.mark.airflow33
def test_retry_after_a_crash_between_the_video_and_its_sidecar_keeps_the_video(
    emulator, airflow_db, test_out
):
    module = load_dag_file(TEST_DAGS / "kling_sidecars.py")
    result = run_dag(module.crash_dag)

    ti = result.ti("crash_before_sidecar")
    assert (ti.state, ti.try_number) == ("success", 2)
    (first_try,) = failure_events(test_out)["crash_before_sidecar"]
    assert "between" in first_try["message"]
    # One generation paid and downloaded once: try 2 kept try 1's video and wrote its sidecar.
    (_post,) = posts(emulator, "crash_before_sidecar:")
    assert len(video_downloads(emulator)) == 1
    out = result.xcom("crash_before_sidecar")
    video = Path(out["video_path"])
    assert video.read_bytes() == emulator.video_data(out["generation_id"])
    record = sidecar_of(out["video_path"])
    assert record["generation_id"] == out["generation_id"]
    assert record["file_size"] == len(emulator.video_data(out["generation_id"]))
    assert record["base_url"] == emulator.base_url
    assert sorted(p.name for p in video.parent.iterdir()) == [video.name, video.name + ".kling.json"]


# ------------------------------------------------------------------------- download() directly


def completed(emu: Any, generation_id: str, size: int) -> Generation:
    return Generation(
        id=generation_id,
        status=GenerationStatus.COMPLETED,
        raw_status="completed",
        video_url=f"{emu.base_url}/_emulator/blob/{size}",
        file_size=size,
    )


def test_a_video_named_after_its_generation_gets_its_missing_or_cut_sidecar(emulator, tmp_path):
    hook = KlingHook()
    folder = tmp_path / "videos"
    folder.mkdir()
    missing = completed(emulator, "gen-missing", 1000)
    (folder / "gen-missing.mp4").write_bytes(b"v" * 1000)
    cut = completed(emulator, "gen-cut", 1000)
    (folder / "gen-cut.mp4").write_bytes(b"v" * 1000)
    (folder / "gen-cut.mp4.kling.json").write_text('{"generation_id": "gen-c')  # a write cut short

    for generation in (missing, cut):
        path = download(hook, generation, f"{folder}/", False, sidecar={"request": "r", "base_url": "u"})
        assert path == str(folder / f"{generation.id}.mp4")
        record = sidecar_of(path)
        assert (record["generation_id"], record["file_size"]) == (generation.id, 1000)
        assert (record["request"], record["base_url"]) == ("r", "u")
    assert video_downloads(emulator) == []  # kept, not fetched again
    assert sorted(p.name for p in folder.iterdir()) == [
        "gen-cut.mp4",
        "gen-cut.mp4.kling.json",
        "gen-missing.mp4",
        "gen-missing.mp4.kling.json",
    ]


def test_a_file_without_sidecar_from_another_generation_is_still_refused(emulator, tmp_path):
    hook = KlingHook()
    generation = completed(emulator, "gen-a", 1000)
    # Its own name but not the size the service announced: not this generation's video.
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "gen-a.mp4").write_bytes(b"x" * 999)
    with pytest.raises(KlingDownloadError, match="already exists"):
        download(hook, generation, f"{folder}/", False)
    # A file name the user chose says nothing of the generation that made it.
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 1000)
    with pytest.raises(KlingDownloadError, match="already exists"):
        download(hook, generation, str(clip), False)
    assert not sidecar_path(folder / "gen-a.mp4").exists()
    assert not sidecar_path(clip).exists()
    assert (folder / "gen-a.mp4").read_bytes() == b"x" * 999
    assert video_downloads(emulator) == []
