"""Each example DAG run end to end through ``dag.test()`` against the emulator.

``dag.test()`` runs the tasks in this process and deferrable tasks' triggers inline, with the real
metadata DB and Execution API, so these runs exercise the provider the way Airflow drives it.
The helpers that run a DAG and read its run back are in tests/support/dags.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.connections import API_KEY, connection_json
from tests.support.dags import (
    EXAMPLES,
    DagRunResult,
    load_dag_file,
    posts,
    run_dag,
)
from tests.support.polls import NEVER_BY_ITSELF, complete_after_first_poll

# dag.test() from a bundle, task_state_store and airflow.sdk DAGs: Airflow 3 only.
pytestmark = pytest.mark.airflow3

#: Poll interval the DAGs read from the environment in tests (the emulator finishes in 0.6 s).
POLL_INTERVAL = "0.2"


def api_posts(emulator: Any) -> list[Any]:
    """The generation POSTs the emulator received on either endpoint (legacy or unified)."""
    return [r for r in emulator.requests if r.method == "POST" and r.endpoint is not None]


@pytest.fixture
def dag_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment the example DAGs read: short polls and a private download folder."""
    downloads = tmp_path / "videos"
    monkeypatch.setenv("KLING_DOWNLOAD_DIR", str(downloads))
    monkeypatch.setenv("KLING_POLL_INTERVAL", POLL_INTERVAL)
    monkeypatch.setenv("KLING_TIMEOUT", "60")
    monkeypatch.delenv("KLING_IMAGE_URL", raising=False)
    return downloads


def run_by_hand(file_name: str, **test_kwargs: Any) -> tuple[ModuleType, DagRunResult]:
    """Run the example's ``dag`` as a run triggered by hand (no logical date); it must succeed."""
    module = load_dag_file(EXAMPLES / file_name)
    result = run_dag(module.dag, logical_date=None, **test_kwargs)
    assert result.state == "success"
    return module, result


def test_basic_example_downloads_the_video(emulator, airflow_db, dag_env):
    module = load_dag_file(EXAMPLES / "example_kling_basic.py")
    result = run_dag(module.dag)

    assert result.state == "success"
    assert result.state_of("image_to_video") == "success"
    out = result.xcom("image_to_video")
    gen_id = result.xcom("image_to_video", key="generation_id")
    assert out["generation_id"] == gen_id
    assert out["status"] == "completed"
    assert out["model"] == "kling-video/v1/standard/image-to-video"
    assert out["file_size"] == len(emulator.video_data(gen_id))
    assert out["usage"]["tokens_used"] > 0
    assert out["video_url"].startswith(emulator.base_url)
    assert result.xcom("image_to_video", key="kling_video_url") == out["video_url"]
    video = Path(out["video_path"])
    assert video.parent == dag_env / "basic"
    assert video.read_bytes() == emulator.video_data(gen_id)
    assert json.loads(json.dumps(out)) == out  # a plain JSON dict, small enough for XCom
    # The rendered request is what the emulator received, once.
    (post,) = posts(emulator)
    assert post.json["image_url"] == module.IMAGE_URL
    assert post.json["duration"] == "5"
    assert post.json["cfg_scale"] == 0.5


def test_pipeline_example_maps_over_shots_and_writes_a_manifest(emulator, airflow_db, dag_env):
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(
        "kling", slots=2, description="Concurrent Kling generations", include_deferred=True
    )
    module = load_dag_file(EXAMPLES / "example_kling_pipeline.py")
    result = run_dag(module.dag)

    assert result.state == "success"
    shots = len(module.STORYBOARD)
    assert result.map_indexes("generate") == list(range(shots))
    assert all(result.state_of("generate", i) == "success" for i in range(shots))
    assert {result.ti("generate", i).pool for i in range(shots)} == {"kling"}
    # Each mapped instance shows its prompt in the UI instead of a bare index.
    assert result.ti("generate", 0).rendered_map_index == module.STORYBOARD[0][1][:40]

    manifest_path = Path(result.xcom("write_manifest"))
    manifest = json.loads(manifest_path.read_text())
    assert manifest["count"] == shots
    assert manifest["run_id"] == result.run_id
    by_id = {v["generation_id"]: v for v in manifest["videos"]}
    assert len(by_id) == shots
    for i in range(shots):
        out = result.xcom("generate", map_index=i)
        assert by_id[out["generation_id"]] == out
        assert result.xcom("generate", key="generation_id", map_index=i) == out["generation_id"]
        assert Path(out["video_path"]).read_bytes() == emulator.video_data(out["generation_id"])
        # Each shot waited in the triggerer, not in a worker slot.
        assert "deferred" in result.events[("generate", i)]
    # One paid POST per shot, each with that shot's image and prompt.
    sent = sorted((p.json["image_url"], p.json["prompt"]) for p in posts(emulator))
    assert sent == sorted(module.STORYBOARD)


@pytest.mark.airflow31
def test_daily_asset_example_emits_the_asset_and_feeds_the_consumer(emulator, airflow_db, dag_env):
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    module = load_dag_file(EXAMPLES / "example_kling_daily_asset.py")
    produced = run_dag(module.producer)

    assert produced.state == "success"
    out = produced.xcom("daily_clip")
    video = Path(out["video_path"])
    assert video.parent == dag_env.resolve() / "daily"
    assert video.name.endswith(".mp4")
    assert video.stem[:4].isdigit()
    assert video.read_bytes() == emulator.video_data(out["generation_id"])
    # The prompt template was rendered before it was sent.
    (post,) = posts(emulator)
    assert "{{" not in post.json["prompt"]
    assert video.stem in post.json["prompt"]

    with create_session() as session:
        asset = session.scalar(
            select(AssetModel).where(
                AssetModel.name == "kling_daily_video", AssetModel.uri == module.KLING_DAILY_VIDEO.uri
            )
        )
        assert asset is not None
        event = session.scalar(
            select(AssetEvent)
            .where(AssetEvent.asset_id == asset.id, AssetEvent.source_run_id == produced.run_id)
            .order_by(AssetEvent.id.desc())
        )
        assert event is not None
        assert event.extra["video_path"] == str(video)
        assert event.extra["generation_id"] == out["generation_id"]
        # The consumer DAG is scheduled on the Asset: the event queued a run of it.
        queued = session.scalars(
            select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == asset.id)
        ).all()
        assert "example_kling_daily_asset_consumer" in queued

    consumed = run_dag(module.consumer)
    assert consumed.state == "success"
    published = consumed.xcom("publish_latest")
    assert published["source"] == str(video)
    assert published["generation_id"] == out["generation_id"]
    assert Path(published["published"]).read_bytes() == emulator.video_data(out["generation_id"])


def test_sensor_example_waits_in_deferrable_mode(emulator, airflow_db, dag_env, monkeypatch):
    # The sensor's first poll finds the generation pending, however loaded the machine: it ends only
    # when a poll of it has been answered.
    monkeypatch.setattr(emulator, "generation_seconds", NEVER_BY_ITSELF)
    module = load_dag_file(EXAMPLES / "example_kling_sensor.py")
    assert module.dag.get_task("wait_for_video").deferrable is True
    with complete_after_first_poll(emulator):
        result = run_dag(module.dag)

    assert result.state == "success"
    submitted = result.xcom("submit")
    gen_id = result.xcom("submit", key="generation_id")
    # submit returned right after the POST, before the generation finished, in the one XCom shape.
    assert_one_shape(submitted)
    assert submitted["generation_id"] == gen_id
    assert submitted["status"] == "pending"
    assert submitted["video_url"] is None
    waited = result.xcom("wait_for_video")
    assert_one_shape(waited)
    assert waited["generation_id"] == gen_id
    assert waited["model"] == submitted["model"]
    assert waited["status"] == "completed"
    assert result.xcom("wait_for_video", key="kling_video_url") == waited["video_url"]
    assert Path(result.xcom("download")).read_bytes() == emulator.video_data(gen_id)
    assert len(posts(emulator)) == 1
    # The sensor waited in its trigger, which holds the id and an epoch deadline, never the key.
    assert result.events[("wait_for_video", -1)] == ["running", "deferred", "running", "success"]
    classpath, kwargs = result.triggers[("wait_for_video", -1)]
    assert classpath == "airflow_provider_kling.triggers.kling.KlingGenerationTrigger"
    assert kwargs["generation_id"] == gen_id
    assert kwargs["kling_conn_id"] == "kling_default"
    assert isinstance(kwargs["end_time"], float)


def test_example_dags_parse_with_production_defaults(monkeypatch):
    """Without the test environment the examples use the real service's pacing and no test paths."""
    for var in ("KLING_DOWNLOAD_DIR", "KLING_POLL_INTERVAL", "KLING_TIMEOUT", "KLING_IMAGE_URL"):
        monkeypatch.delenv(var, raising=False)
    home = os.environ["AIRFLOW_HOME"]
    for path in sorted(EXAMPLES.glob("example_kling_*.py")):
        module = load_dag_file(path)
        assert module.POLL_INTERVAL == 10.0, path.name
        assert str(module.DOWNLOAD_DIR).startswith(home), path.name
        source = path.read_text()
        assert "from airflow.sdk import" in source, path.name
        assert "https://" in source, path.name


# ------------------------------------------------------------------------------ the 2026 examples
#: Template variables that exist only when a run has a logical date: a manual run on Airflow 3 has none.
LOGICAL_DATE_TEMPLATE = re.compile(
    r"\{\{[^}]*\b(ds|ds_nodash|ts|ts_nodash|logical_date|data_interval_start|data_interval_end|"
    r"prev_ds|next_ds|yesterday_ds|tomorrow_ds)\b"
)


def assert_one_shape(out: dict[str, Any]) -> None:
    """Every Kling task returns the same keys (README: "XCom"), as plain JSON."""
    from airflow_provider_kling.operators.kling import RESULT_KEYS

    assert set(out) == set(RESULT_KEYS)
    assert json.loads(json.dumps(out)) == out


def test_v3_audio_example_sends_generate_audio_and_an_8_second_duration(emulator, airflow_db, dag_env):
    module = load_dag_file(EXAMPLES / "example_kling_v3_audio.py")
    # As a run triggered by hand on Airflow 3: no logical date.
    result = run_dag(module.dag, logical_date=None)

    assert result.state == "success"
    (post,) = api_posts(emulator)
    assert post.endpoint == "legacy"
    assert post.json == {
        "model": "klingai/video-v3-pro-image-to-video",
        "image_url": module.IMAGE_URL,
        "prompt": module.PROMPT,
        "duration": 8,
        "negative_prompt": "blur, distortion, text",
        "generate_audio": True,
    }
    out = result.xcom("image_to_video_with_audio")
    assert_one_shape(out)
    assert out["generation_id"] == result.xcom("image_to_video_with_audio", key="generation_id")
    assert out["status"] == "completed"
    assert out["model"] == "klingai/video-v3-pro-image-to-video"
    assert out["usage"]["tokens_used"] > 0
    video = Path(out["video_path"])
    assert video.parent == dag_env / "v3_audio"
    assert video.read_bytes() == emulator.video_data(out["generation_id"])
    # It waited in the triggerer, not in a worker slot.
    assert "deferred" in result.events[("image_to_video_with_audio", -1)]


def test_v3_audio_example_on_the_unified_endpoint_reports_credits_and_usd(
    airflow_db, dag_env, monkeypatch: pytest.MonkeyPatch
):
    """The connection's ``{"endpoint": "unified"}`` extra, against the 2026 answers (credits + USD)."""
    from airflow_provider_kling.emulator import KlingEmulator
    from airflow_provider_kling.emulator.app import UNIFIED_PATH

    emu = KlingEmulator(api_key=API_KEY, generation_seconds=0.6, answer_style="2026")
    emu.start()
    try:
        # As the README shows it, plus the emulator's loopback downloads (tests.support.connections).
        monkeypatch.setenv(
            "AIRFLOW_CONN_KLING_DEFAULT",
            connection_json(host=emu.base_url, password=API_KEY, extra={"endpoint": "unified"}),
        )
        module = load_dag_file(EXAMPLES / "example_kling_v3_audio.py")
        result = run_dag(module.dag, logical_date=None)
        (post,) = api_posts(emu)
        polls = [r for r in emu.requests if r.method == "GET" and r.endpoint is not None]
    finally:
        emu.stop()

    assert result.state == "success"
    assert post.path == UNIFIED_PATH
    assert post.json["generate_audio"] is True
    assert post.json["duration"] == 8
    assert polls
    assert {p.path for p in polls} == {UNIFIED_PATH}
    out = result.xcom("image_to_video_with_audio")
    assert_one_shape(out)
    assert out["usage"]["credits_used"] > 0
    assert out["usage"]["usd_spent"] == pytest.approx(out["usage"]["credits_used"] / 2_000_000)
    assert Path(out["video_path"]).read_bytes() == emu.video_data(out["generation_id"])


# Airflow 3.3.2's dag.test() resumes a deferred task with next_kwargs={'event': ...} only, dropping the
# operator's own kwargs (api, usage, sidecar); the operator keeps them in XCom too.
def test_deferred_example_names_its_endpoint_under_dag_test(emulator, airflow_db, dag_env):
    _, result = run_by_hand("example_kling_v3_audio.py")
    assert result.xcom("image_to_video_with_audio")["endpoint"] == "legacy"


def test_text_to_video_example_sends_the_prompt_and_its_params(emulator, airflow_db, dag_env):
    module, result = run_by_hand("example_kling_text_to_video.py")
    (post,) = api_posts(emulator)
    assert post.json == {
        "model": "klingai/v2.5-turbo/pro/text-to-video",
        "prompt": module.PROMPT,
        "aspect_ratio": "16:9",
        "duration": 5,
        "negative_prompt": "blur, distortion, text, watermark",
        "cfg_scale": 0.5,
    }
    out = result.xcom("text_to_video")
    assert_one_shape(out)
    assert out["status"] == "completed"
    assert out["model"] == "klingai/v2.5-turbo/pro/text-to-video"
    assert out["endpoint"] == "legacy"
    video = Path(out["video_path"])
    assert video.parent == dag_env / "text_to_video"
    assert video.read_bytes() == emulator.video_data(out["generation_id"])


def test_text_to_video_example_takes_the_trigger_forms_params(emulator, airflow_db, dag_env):
    """What a user types into the trigger form (the run's conf) reaches the request."""
    conf = {"prompt": "A lighthouse in a storm, waves crashing", "aspect_ratio": "9:16"}
    run_by_hand("example_kling_text_to_video.py", run_conf=conf)
    (post,) = api_posts(emulator)
    assert post.json["prompt"] == conf["prompt"]
    assert post.json["aspect_ratio"] == "9:16"


def test_avatar_example_sends_the_image_and_the_audio(emulator, airflow_db, dag_env):
    module, result = run_by_hand("example_kling_avatar.py")
    (post,) = api_posts(emulator)
    assert post.json == {
        "model": "klingai/avatar-pro",
        "image_url": module.AVATAR_IMAGE_URL,
        "audio_url": module.AUDIO_URL,
        "prompt": module.PROMPT,
    }
    assert module.AVATAR_IMAGE_URL.startswith("https://")
    assert module.AUDIO_URL.startswith("https://")
    assert module.AUDIO_URL.rsplit(".", 1)[-1] in ("mp3", "wav", "m4a", "aac")
    out = result.xcom("avatar")
    assert_one_shape(out)
    assert out["status"] == "completed"
    assert out["model"] == "klingai/avatar-pro"
    video = Path(out["video_path"])
    assert video.parent == dag_env / "avatar"
    assert video.read_bytes() == emulator.video_data(out["generation_id"])
    assert "deferred" in result.events[("avatar", -1)]


def test_basic_example_runs_when_triggered_by_hand(emulator, airflow_db, dag_env):
    """Airflow 3 gives a manual run no logical date: the first example must not need one."""
    _, result = run_by_hand("example_kling_basic.py")
    out = result.xcom("image_to_video")
    assert Path(out["video_path"]).read_bytes() == emulator.video_data(out["generation_id"])


def test_manually_triggered_examples_use_no_logical_date_template():
    """``{{ ds }}`` and friends are undefined in a manual run of a ``schedule=None`` DAG on Airflow 3."""
    for path in sorted(EXAMPLES.glob("example_kling_*.py")):
        module = load_dag_file(path)
        for dag in [v for v in vars(module).values() if type(v).__name__ == "DAG"]:
            if type(dag.timetable).__name__ != "NullTimetable":  # schedule=None: only manual runs
                continue
            for task in dag.tasks:
                for field in task.template_fields:
                    text = json.dumps(getattr(task, field, None), default=str)
                    assert not LOGICAL_DATE_TEMPLATE.search(text), (path.name, task.task_id, field, text)
