"""Regression tests for issues 10 and 11: paying once, odd answers, resuming, one XCom shape, what users see.

Each test runs a small DAG from tests/dags/ with ``dag.test()`` (which runs Airflow's retries, with
``retry_delay`` 0, and deferred tasks' triggers inline) against the emulator over real sockets, and
drives the emulator through its control API (scripted answers, queued ids), never by sleeping.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.dags import TEST_DAGS, failure_events, load_dag_file, posts, run_dag

# dag.test() from a bundle, task_state_store and airflow.sdk DAGs: Airflow 3 only.
pytestmark = pytest.mark.airflow3

V1 = "kling-video/v1/standard/image-to-video"
OMNI = "klingai/video-v3-omni-720p-image-to-video"


@pytest.fixture
def test_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the test DAGs download to and record their failures."""
    monkeypatch.setenv("KLING_TEST_OUT", str(tmp_path))
    return tmp_path


def only_event(events: dict[str, list[dict[str, Any]]], task_id: str) -> dict[str, Any]:
    (event,) = events[task_id]
    return event


def generation_polls(emulator: Any, generation_id: str) -> list[Any]:
    return [
        r for r in emulator.requests if r.method == "GET" and r.query.get("generation_id") == generation_id
    ]


def downloads(emulator: Any) -> list[Any]:
    return [r for r in emulator.requests if r.path.startswith("/_emulator/videos/")]


# ------------------------------------------------------------------------------------ issue 10


@pytest.mark.airflow33  # records the paid id in task_state_store (3.3+)
def test_paid_post_whose_id_cannot_be_recorded_fails_without_retry(emulator, airflow_db, test_out):
    """Issue 10 #1: the POST succeeded, then ``task_state_store.set`` raised (Execution API 503)."""
    module = load_dag_file(TEST_DAGS / "kling_paid_unrecorded.py")
    result = run_dag(module.dag)
    events = failure_events(test_out)

    ti = result.ti("store_down")
    # Failed on the first try although retries=2: a retry would not find the id and would pay again.
    assert (ti.state, ti.try_number, ti.max_tries) == ("failed", 1, 2)
    event = only_event(events, "store_down")
    assert event["exception"] == "AirflowFailException", event
    (_post,) = posts(emulator, "store_down:")
    (paid_id,) = emulator.generations
    # The message names the paid id and the way to get its video without paying again.
    assert paid_id in event["message"]
    assert "KlingGenerationSensor" in event["message"]
    assert "503" in event["message"]


def test_omni_video_list_gives_the_first_url_and_lists_them_all(emulator, airflow_db, test_out):
    """Issue 10 #3: ``video`` as a list of {url} (v3 omni): a URL string in XCom, the link and the file."""
    from airflow_provider_kling.emulator import blob_bytes

    scripted_id = f"{uuid.uuid4()}:{OMNI}"
    first, second = (f"{emulator.base_url}/_emulator/blob/{n}" for n in (3000, 4000))
    emulator.queue_ids(scripted_id)
    # The first poll (of the first task, omni_two_videos) is answered with two videos.
    emulator.script(
        method="GET",
        body={
            "id": scripted_id,
            "status": "completed",
            "video": [{"url": first}, {"url": second}],
            "meta": {"usage": {"credits_used": 100_000, "usd_spent": 0.05}},
        },
    )
    module = load_dag_file(TEST_DAGS / "kling_answers.py")
    result = run_dag(module.omni_dag)

    assert result.state == "success"
    assert result.ti("omni_two_videos").try_number == 1
    out = result.xcom("omni_two_videos")
    assert out["generation_id"] == scripted_id
    assert out["video_url"] == first
    assert out["video_urls"] == [first, second]
    assert result.xcom("omni_two_videos", key="kling_video_url") == first
    video = Path(out["video_path"])
    assert video.read_bytes() == blob_bytes(0, 3000)
    assert json.loads(video.with_name(video.name + ".kling.json").read_text())["generation_id"] == scripted_id

    # The emulator's own omni answer (a list of one), through the trigger.
    out = result.xcom("omni_emulated")
    assert isinstance(out["video_url"], str)
    assert out["video_url"].startswith(emulator.base_url + "/_emulator/videos/")
    assert out["video_urls"] == [out["video_url"]]
    assert result.xcom("omni_emulated", key="kling_video_url") == out["video_url"]
    assert Path(out["video_path"]).read_bytes() == emulator.video_data(out["generation_id"])
    assert len(posts(emulator)) == 2


@pytest.mark.airflow33  # a retry reconnects through task_state_store (3.3+)
def test_retry_after_a_successful_download_keeps_it(emulator, airflow_db, test_out):
    """Issue 10 #4: try 1 downloaded the video and died; try 2 reconnects and accepts its own file."""
    module = load_dag_file(TEST_DAGS / "kling_retry_after_download.py")
    result = run_dag(module.dag)
    events = failure_events(test_out)

    ti = result.ti("die_after_download")
    assert (ti.state, ti.try_number) == ("success", 2)
    first = only_event(events, "die_after_download")
    assert "worker lost after downloading" in first["message"]
    (_post,) = posts(emulator, "die_after_download:")
    out = result.xcom("die_after_download")
    video = Path(out["video_path"])
    assert first["message"].endswith(str(video))
    # Downloaded once (by try 1); try 2 kept that file, whose sidecar names the generation and its size.
    assert len(downloads(emulator)) == 1
    assert video.read_bytes() == emulator.video_data(out["generation_id"])
    sidecar = json.loads(video.with_name(video.name + ".kling.json").read_text())
    assert sidecar["generation_id"] == out["generation_id"]
    assert sidecar["file_size"] == len(emulator.video_data(out["generation_id"]))
    assert sorted(p.name for p in video.parent.iterdir()) == [video.name, video.name + ".kling.json"]


@pytest.mark.airflow33  # a retry reconnects through task_state_store (3.3+)
def test_completed_without_a_video_url_is_a_retryable_error(emulator, airflow_db, test_out):
    """Issue 10 #5: "completed" with no URL fails (naming the generation) instead of passing silently."""
    gen_id = f"{uuid.uuid4()}:{V1}"
    emulator.queue_ids(gen_id)
    emulator.script(method="GET", body={"id": gen_id, "status": "completed", "video": None})
    module = load_dag_file(TEST_DAGS / "kling_answers.py")
    result = run_dag(module.no_url_dag)
    events = failure_events(test_out)

    assert "completed_without_url" in events, "'completed' without a video URL passed silently"
    first = only_event(events, "completed_without_url")
    assert first["try_number"] == 1
    # Retryable (the service may fill the URL in), and it names the generation.
    assert first["exception"] != "AirflowFailException", first
    assert gen_id in first["message"]
    assert "no video URL" in first["message"]
    # The retry reconnected to the same generation, which the emulator then answered in full.
    ti = result.ti("completed_without_url")
    assert (ti.state, ti.try_number) == ("success", 2)
    (_post,) = posts(emulator)
    out = result.xcom("completed_without_url")
    assert out["generation_id"] == gen_id
    assert Path(out["video_path"]).read_bytes() == emulator.video_data(gen_id)


def clear_and_rerun(dag: Any, run_id: str, task_ids: list[str]) -> dict[str, Any]:
    """Clear tasks of a finished run as the UI's "Clear" does, then run them again as ``dag.test()`` would.

    Clearing keeps the run and its task_state_store; ``dag`` may be an edited version of the DAG.
    :return: task_id -> (state, try_number, return value).
    """
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.models.xcom import XComModel
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    def task_instances(session: Any) -> list[Any]:
        return list(
            session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag.dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id.in_(task_ids),
                )
            ).all()
        )

    with create_session() as session:
        clear_task_instances(task_instances(session), session, dag_run_state=DagRunState.RUNNING)
    with create_session() as session:
        tis = task_instances(session)
        for ti in tis:
            ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        for ti in tis:
            _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
    outcome = {}
    with create_session() as session:
        for ti in task_instances(session):
            row = session.scalar(
                select(XComModel).where(
                    XComModel.dag_id == dag.dag_id,
                    XComModel.run_id == run_id,
                    XComModel.task_id == ti.task_id,
                    XComModel.key == "return_value",
                )
            )
            value = XComModel.deserialize_value(row) if row is not None else None
            outcome[ti.task_id] = (str(ti.state), ti.try_number, value)
    return outcome


@pytest.mark.airflow33  # a retry reconnects through task_state_store (3.3+)
def test_clear_after_editing_the_prompt_submits_a_new_generation(emulator, airflow_db, test_out, monkeypatch):
    """Issue 10 #7: task_state_store survives a clear; only an unchanged request may reconnect."""
    monkeypatch.setenv("KLING_TEST_PROMPT", "apples ripen in the sun")
    first_run = run_dag(load_dag_file(TEST_DAGS / "kling_clear_edit.py").dag)
    assert first_run.state == "success"
    old_edited = first_run.xcom("edited")["generation_id"]
    old_unchanged = first_run.xcom("unchanged")["generation_id"]

    # The user edits the DAG file's prompt, then clears both tasks of the same run.
    monkeypatch.setenv("KLING_TEST_PROMPT", "apples fall in the wind")
    edited_dag = load_dag_file(TEST_DAGS / "kling_clear_edit.py").dag
    again = clear_and_rerun(edited_dag, first_run.run_id, ["edited", "unchanged"])

    state, try_number, out = again["edited"]
    assert (state, try_number) == ("success", 2)
    # A new generation for the new prompt: two POSTs in all, the second with the edited prompt.
    before, after = posts(emulator, "edited:")
    assert before.json["prompt"] == "edited: apples ripen in the sun"
    assert after.json["prompt"] == "edited: apples fall in the wind"
    assert out["generation_id"] != old_edited
    assert out["generation_id"] in emulator.generations
    # The unchanged request reconnected to its generation: one POST in all.
    state, try_number, out = again["unchanged"]
    assert (state, try_number) == ("success", 2)
    (_post,) = posts(emulator, "unchanged:")
    assert out["generation_id"] == old_unchanged


def test_sensor_timeout_is_the_same_in_poke_and_deferrable_mode(emulator, airflow_db, test_out):
    """Issue 10 #10: a generation that never completes in time: AirflowSensorTimeout in every mode."""
    module = load_dag_file(TEST_DAGS / "kling_sensor_timeout.py")
    result = run_dag(module.dag)
    events = failure_events(test_out)
    gen_id = result.xcom("submit", key="generation_id")

    for task_id in ("poke", "deferrable", "no_triggerer"):
        ti = result.ti(task_id)
        # Not retried (retries=2): a sensor timeout is final, in every mode.
        assert (ti.state, ti.try_number, ti.max_tries) == ("failed", 1, 2), task_id
        event = only_event(events, task_id)
        assert event["exception"] == "AirflowSensorTimeout", event
    assert gen_id in events["deferrable"][0]["message"]
    # The trigger (not the worker) reported the deferrable sensor's timeout.
    assert "deferred" in result.events[("deferrable", -1)]
    # The deferral carries Airflow's own bound, so a sensor with no triggerer does not wait forever.
    (deferral,) = (json.loads(line) for line in (test_out / "deferrals.jsonl").read_text().splitlines())
    assert deferral["task_id"] == "no_triggerer"
    assert deferral["timeout"] is not None
    assert deferral["timeout"] >= 2
    (_post,) = posts(emulator)


def test_sensor_deferral_timeout_names_the_generation():
    """Issue 10 #10 / 11 #3: a sensor resumed after its deferral timed out says which generation."""
    from airflow.models.trigger import TriggerFailureReason
    from airflow.providers.common.compat.sdk import AirflowSensorTimeout

    from airflow_provider_kling.sensors.kling import KlingGenerationSensor

    gen_id = f"{uuid.uuid4()}:{V1}"
    sensor = KlingGenerationSensor(task_id="wait", generation_id=gen_id, deferrable=True)
    with pytest.raises(AirflowSensorTimeout) as info:
        sensor.resume_execution("__fail__", {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, {})  # type: ignore[arg-type]
    assert gen_id in str(info.value)


@pytest.mark.airflow33  # a retry reconnects through task_state_store (3.3+)
def test_same_download_file_for_two_mapped_tasks(emulator, airflow_db, test_out):
    """Issue 10 suspicion: two mapped instances, one download_to file (as dag.test runs them, in turn)."""
    module = load_dag_file(TEST_DAGS / "kling_same_file.py")
    result = run_dag(module.dag)
    events = failure_events(test_out)

    states = sorted(result.state_of("same_file", i) for i in (0, 1))
    assert states == ["failed", "success"]
    winner = next(i for i in (0, 1) if result.state_of("same_file", i) == "success")
    loser = 1 - winner
    (event,) = [e for e in events["same_file"] if e["map_index"] == loser]
    # The second one was refused before paying, without retries, naming the file and the way out.
    assert event["exception"] == "AirflowFailException"
    assert "clip.mp4 already exists" in event["message"]
    assert "overwrite=True" in event["message"]
    assert result.ti("same_file", loser).try_number == 1
    (_post,) = posts(emulator)
    shared = test_out / "shared"
    out = result.xcom("same_file", map_index=winner)
    assert Path(out["video_path"]) == shared / "clip.mp4"
    assert (shared / "clip.mp4").read_bytes() == emulator.video_data(out["generation_id"])
    sidecar = json.loads((shared / "clip.mp4.kling.json").read_text())
    assert sidecar["generation_id"] == out["generation_id"]
    # No partial file left behind.
    assert sorted(p.name for p in shared.iterdir()) == ["clip.mp4", "clip.mp4.kling.json"]


class _GateServer:
    """A loopback video host that answers no GET until ``parties`` of them are in flight at once.

    Two downloads to one file then both get past every "does it exist" check before either writes.
    """

    def __init__(self, parties: int, size: int) -> None:
        barrier = threading.Barrier(parties, timeout=10)
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                self.paths.append(handler.path)
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    pass  # the other download never came: answer anyway
                body = handler.path.strip("/").encode()[:1] * size
                handler.send_response(200)
                handler.send_header("Content-Type", "video/mp4")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _GateServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_concurrent_downloads_to_one_file_keep_exactly_one(emulator, tmp_path):
    """Issue 10 suspicion: two instances downloading to one file at the same time (different workers).

    The gate server holds both answers until both downloads are in flight, so both have passed the
    existence checks: exactly one may keep the file, the other must fail, and no partial file remains.
    """
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import Generation, GenerationStatus
    from airflow_provider_kling.operators.kling import download

    target = tmp_path / "shared" / "clip.mp4"
    size = 4096
    outcomes: dict[str, Any] = {}
    with _GateServer(parties=2, size=size) as gate:

        def fetch(name: str) -> None:
            generation = Generation(
                id=f"{uuid.uuid4()}:{V1}",
                status=GenerationStatus.COMPLETED,
                video_url=f"{gate.url}/{name}",
                file_size=size,
            )
            try:
                outcomes[name] = (generation.id, download(KlingHook(), generation, str(target), False))
            except Exception as exc:
                outcomes[name] = (generation.id, exc)

        threads = [threading.Thread(target=fetch, args=(name,)) for name in ("A", "B")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(gate.paths) == ["/A", "/B"]
    kept = {name: value for name, (_, value) in outcomes.items() if value == str(target)}
    failed = {name: value for name, (_, value) in outcomes.items() if isinstance(value, Exception)}
    assert len(kept) == 1, f"both downloads reported success with the same file: {outcomes}"
    assert len(failed) == 1, outcomes
    (winner,) = kept
    assert "already exists" in str(next(iter(failed.values())))
    # The file is the winner's, with the winner's sidecar, and nothing partial is left.
    assert target.read_bytes() == winner.encode() * size
    sidecar = json.loads(target.with_name("clip.mp4.kling.json").read_text())
    assert sidecar["generation_id"] == outcomes[winner][0]
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.mp4", "clip.mp4.kling.json"]


# ------------------------------------------------------------------------------------ issue 11


@pytest.mark.airflow33  # a retry reconnects through task_state_store (3.3+)
def test_deferral_timeout_says_what_happened_and_the_retry_reconnects(emulator, airflow_db, test_out, capfd):
    """Issue 11 #3: no triggerer: the deferral log line, the resume message, then a retry pays nothing."""
    module = load_dag_file(TEST_DAGS / "kling_deferral_timeout.py")
    result = run_dag(module.dag)
    logs = capfd.readouterr()
    events = failure_events(test_out)
    gen_id = result.xcom("no_triggerer", key="generation_id")

    # At deferral: the id, the poll interval, the deadline, and that a triggerer must run.
    (deferral,) = (json.loads(line) for line in (test_out / "deferrals.jsonl").read_text().splitlines())
    lines = [line for line in (logs.out + logs.err).splitlines() if "Deferring" in line and gen_id in line]
    assert lines, "no deferral log line names the generation"
    line = lines[0]
    assert "every 0.2 s" in line
    deadline = re.search(r"until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)", line)
    assert deadline is not None, line
    assert deadline.group(1) == time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime(deferral["trigger"]["end_time"])
    )
    assert "triggerer" in line
    assert "must be running" in line

    # Resumed after the deferral's timeout: a clear, retryable message naming the generation.
    first = only_event(events, "no_triggerer")
    assert first["exception"] != "AirflowFailException", first
    message = first["message"]
    assert gen_id in message
    assert "deferral timed out" in message
    assert "triggerer" in message
    assert "may have finished" in message
    assert "retry" in message
    assert "reconnects" in message
    # ... and the retry did reconnect: one POST, the same generation, now complete.
    ti = result.ti("no_triggerer")
    assert (ti.state, ti.try_number) == ("success", 2)
    (_post,) = posts(emulator)
    assert result.xcom("no_triggerer")["generation_id"] == gen_id
    assert result.events[("no_triggerer", -1)].count("deferred") >= 1


def test_every_task_returns_the_same_keys(emulator, airflow_db, test_out):
    """Issue 11 #5: image (waiting / submit only), text, generic, sensor poke and deferrable: one shape."""
    from airflow_provider_kling.operators.kling import RESULT_KEYS

    module = load_dag_file(TEST_DAGS / "kling_result_keys.py")
    result = run_dag(module.dag)

    assert result.state == "success"
    tasks = ("image_waiting", "image_submit_only", "text", "generic", "sensor_poke", "sensor_deferrable")
    for task_id in tasks:
        out = result.xcom(task_id)
        assert tuple(out) == RESULT_KEYS, task_id
        assert out["status"] in ("pending", "completed"), task_id
        assert json.loads(json.dumps(out)) == out
    assert result.xcom("image_submit_only")["status"] == "pending"
    # The sensors report the model too (read from the <uuid>:<model> id).
    for task_id, watched in (("sensor_poke", "image_waiting"), ("sensor_deferrable", "image_submit_only")):
        out = result.xcom(task_id)
        assert out["generation_id"] == result.xcom(watched)["generation_id"]
        assert out["model"] == V1
        assert out["status"] == "completed"
    assert result.xcom("text")["model"] == "kling-video/v1.6/standard/text-to-video"
    assert "deferred" in result.events[("sensor_deferrable", -1)]


def test_stored_video_link_points_at_the_storage_console():
    """Issue 11 #6: a downloaded video's link outlives the service's signed URL."""
    from airflow_provider_kling.operators.kling import stored_video_link

    assert stored_video_link("s3://my-bucket/videos/a clip.mp4") == (
        "https://s3.console.aws.amazon.com/s3/object/my-bucket?prefix=videos/a%20clip.mp4"
    )
    assert stored_video_link("gs://my-bucket/videos/clip.mp4") == (
        "https://console.cloud.google.com/storage/browser/_details/my-bucket/videos/clip.mp4"
    )
    # Local files have no page of their own: the service's URL stays the link.
    assert stored_video_link("/data/videos/clip.mp4") is None
    assert stored_video_link("file:///data/videos/clip.mp4") is None


def test_what_the_user_sees_link_logs_file_names(emulator, airflow_db, test_out, capfd):
    """Issue 11 #6 and #9: the link's XCom on every task, the model named once, short file names."""
    module = load_dag_file(TEST_DAGS / "kling_user_view.py")
    result = run_dag(module.dag)
    logs = capfd.readouterr()
    text = logs.out + logs.err

    # A local download: the link is the service's URL.
    out = result.xcom("local_download")
    assert result.xcom("local_download", key="kling_video_url") == out["video_url"]
    assert out["video_url"].startswith(emulator.base_url)
    # A task refused before submitting still has the link's XCom (empty), so the UI logs no
    # "XCom not found ... kling_video_url" for it.
    ti = result.ti("fails_before_submit")
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert result.xcom("fails_before_submit", key="kling_video_url") == ""
    assert not posts(emulator, "never sent")

    # The file is named after the id, without the model path the <uuid>:<model> id carries.
    gen_id = out["generation_id"]
    assert gen_id.endswith(":" + V1)
    video = Path(out["video_path"])
    assert video.name == gen_id.partition(":")[0] + ".mp4"
    # Every log line about the generation names the model once (the id already holds it). Airflow 3.0's
    # dag.test() also prints the task runner's messages at debug level (msg=SetXCom(...) holds the whole
    # XCom, with its "model" key): those echo the result, they are not the provider's log lines.
    lines = [
        line for line in text.splitlines() if gen_id in line and not re.search(r"\bmsg=[A-Z]\w*\(", line)
    ]
    submitted = [line for line in lines if "submitted" in line]
    assert submitted, "no submit log line"
    for line in lines:
        assert line.count(V1) == 1, line
    # The prompt is plain text under Rendered Templates (no markdown/code renderer).
    from airflow_provider_kling.operators.kling import (
        KlingImageToVideoOperator,
        KlingTextToVideoOperator,
        KlingVideoOperator,
    )

    for operator in (KlingImageToVideoOperator, KlingTextToVideoOperator, KlingVideoOperator):
        assert "prompt" in operator.template_fields
        assert operator.template_fields_renderers.get("prompt") is None, operator
