"""KlingImageToVideoOperator through Airflow itself: resume on retry, failure semantics, mapping.

Each test runs a DAG from tests/dags/ with ``dag.test()``, which also runs Airflow's retries
(``retry_delay`` is 0 there), against the emulator over HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling.operators.kling import RESULT_KEYS
from airflow_provider_kling.version_compat import AIRFLOW_V_3_3_PLUS
from tests.support.connections import API_KEY, set_connection
from tests.support.dags import (
    TEST_DAGS,
    failure_events,
    load_dag_file,
    posts,
    run_dag,
    task_state_rows,
)

# dag.test() from a bundle, task_state_store and airflow.sdk DAGs: Airflow 3 only.
pytestmark = pytest.mark.airflow3


@pytest.fixture
def test_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the test DAGs download to and record their failures."""
    monkeypatch.setenv("KLING_TEST_OUT", str(tmp_path))
    return tmp_path


@pytest.mark.airflow33
def test_retry_reconnects_to_the_paid_generation(emulator, airflow_db, test_out):
    # The only task that downloads gets its three download attempts dropped mid-body.
    emulator.inject("reset_mid", path_prefix="/_emulator/videos", times=3)
    module = load_dag_file(TEST_DAGS / "kling_resume.py")
    result = run_dag(module.dag)
    events = failure_events(test_out)

    for task_id in ("resume_pending", "resume_pending_deferred", "resume_completed", "download_fails_once"):
        ti = result.ti(task_id)
        assert (ti.state, ti.try_number) == ("success", 2), task_id
        (first_try,) = events[task_id]
        assert first_try["try_number"] == 1
        # Exactly one paid POST, though the task ran twice.
        (_post,) = posts(emulator, f"{task_id}:")
        out = result.xcom(task_id)
        assert out["status"] == "completed"
        assert result.xcom(task_id, key="generation_id") == out["generation_id"]
        assert out["generation_id"] in first_try["message"]

    assert "worker lost after submitting" in events["resume_pending"][0]["message"]
    # The retries found their generations still running, or already done, from the stored id.
    resumed = {
        line["task_id"]: line
        for line in map(json.loads, (test_out / "resumed.jsonl").read_text().splitlines())
    }
    for task_id, statuses in (
        ("resume_pending", ("queued", "generating")),
        ("resume_pending_deferred", ("queued", "generating")),
        ("resume_completed", ("completed",)),
    ):
        assert resumed[task_id]["generation_id"] == result.xcom(task_id, key="generation_id")
        assert resumed[task_id]["status"] in statuses, task_id
    # The stored id went to the trigger of the deferred retry.
    classpath, kwargs = result.triggers[("resume_pending_deferred", -1)]
    assert classpath == "airflow_provider_kling.triggers.kling.KlingGenerationTrigger"
    assert kwargs["generation_id"] == result.xcom("resume_pending_deferred", key="generation_id")
    assert result.events[("resume_pending_deferred", -1)][-3:] == ["deferred", "running", "success"]
    # The download failed as a network error (retryable), naming the generation.
    download_failure = events["download_fails_once"][0]
    assert download_failure["exception"] != "AirflowFailException"
    assert "video download" in download_failure["message"]
    assert Path(result.xcom("download_fails_once")["video_path"]).read_bytes() == emulator.video_data(
        result.xcom("download_fails_once")["generation_id"]
    )
    assert emulator.fault_counts["reset_mid"] == 3

    # A stored generation that ended in error is the one case a retry pays again.
    ti = result.ti("resubmit_after_error")
    assert (ti.state, ti.try_number) == ("success", 2)
    assert resumed["resubmit_after_error"]["status"] is None
    first, second = posts(emulator, "resubmit_after_error:")
    assert "[error]" in first.json["prompt"]
    assert "[error]" not in second.json["prompt"]
    first_id = events["resubmit_after_error"][0]["message"].rsplit(" ", 1)[-1]
    assert emulator.generations[first_id].outcome == "error"
    assert result.xcom("resubmit_after_error")["generation_id"] != first_id

    # task_state_store kept only generation ids, never the key.
    stored = task_state_rows(result.dag_id, result.run_id)
    assert all(API_KEY not in row["value"] for row in stored)


def test_failure_semantics(emulator, airflow_db, test_out):
    set_connection("kling_bad_key", host=emulator.base_url, password="not-the-key")
    emulator.inject("403", method="POST", times=1)
    emulator.inject("429", method="POST", times=6, retry_after=0)
    emulator.inject("503", method="GET", times=6, retry_after=0)
    module = load_dag_file(TEST_DAGS / "kling_failures.py")
    result = run_dag(module.dag)
    events = failure_events(test_out)

    def only_failure(task_id: str) -> dict[str, Any]:
        ti = result.ti(task_id)
        # Failed on the first try although retries=2: AirflowFailException skips the retries.
        assert (ti.state, ti.try_number, ti.max_tries) == ("failed", 1, 2), task_id
        (event,) = events[task_id]
        assert event["exception"] == "AirflowFailException", event
        return event

    assert "answered 403" in only_failure("forbidden")["message"]
    assert "answered 401" in only_failure("unauthorized")["message"]
    invalid = only_failure("invalid")["message"]
    # The rendered values were validated, and nothing was sent.
    assert "duration" in invalid
    assert "got 7" in invalid
    assert "image_url" in invalid
    assert not posts(emulator, "invalid:")

    errored = only_failure("errored")["message"]
    (_post,) = posts(emulator, "errored:")
    errored_id = result.xcom("errored", key="generation_id")
    assert errored_id in errored
    assert "Could not detect face in the image" in errored
    deferred = only_failure("errored_deferred")["message"]
    deferred_id = result.xcom("errored_deferred", key="generation_id")
    assert deferred_id in deferred
    assert "rejected by the content policy" in deferred

    # Transient failures outlasting the hook's retries fail normally; Airflow's retry succeeds.
    for task_id in ("rate_limited", "poll_outage"):
        ti = result.ti(task_id)
        assert (ti.state, ti.try_number) == ("success", 2), task_id
        (event,) = events[task_id]
        assert event["exception"] != "AirflowFailException"
    assert "answered 429" in events["rate_limited"][0]["message"]
    outage = events["poll_outage"][0]["message"]
    outage_id = result.xcom("poll_outage", key="generation_id")
    assert "answered 503" in outage
    # The hook tried the POST six times; the seventh (Airflow's retry) went through.
    assert len(posts(emulator, "rate_limited:")) == 7
    if AIRFLOW_V_3_3_PLUS:
        # The retry reconnected to the generation the outage hid: no second payment.
        assert outage_id in outage
        assert len(posts(emulator, "poll_outage:")) == 1
    else:
        # No task_state_store before 3.3: the retry submits anew (the README says so).
        assert outage_id not in outage
        assert len(posts(emulator, "poll_outage:")) == 2
    assert emulator.fault_counts == {"403": 1, "429": 6, "503": 6}
    for event in (e for task_events in events.values() for e in task_events):
        assert API_KEY not in (event["message"] or "")


def test_mapping_and_taskflow_inputs(emulator, airflow_db, test_out):
    module = load_dag_file(TEST_DAGS / "kling_mapping.py")
    result = run_dag(module.dag)

    assert result.state == "success"
    assert result.map_indexes("by_url") == [0, 1, 2]
    ids = set()
    for i, image_url in enumerate(module.IMAGES):
        out = result.xcom("by_url", map_index=i)
        assert out["status"] == "completed"
        assert result.xcom("by_url", key="generation_id", map_index=i) == out["generation_id"]
        assert Path(out["video_path"]).read_bytes() == emulator.video_data(out["generation_id"])
        # Named after the id, without the model path a <uuid>:<model> id carries.
        assert Path(out["video_path"]).name == out["generation_id"].partition(":")[0] + ".mp4"
        assert tuple(out) == RESULT_KEYS
        # The template saw the mapped value.
        (post,) = posts(emulator, image_url.rsplit("/", 1)[-1])
        assert post.json["image_url"] == image_url
        ids.add(out["generation_id"])
    assert len(ids) == 3

    # XComArgs from TaskFlow tasks were resolved before the operator rendered and validated them.
    (post,) = posts(emulator, "sunlight flickers")
    assert post.json == {
        "model": "kling-video/v1/standard/image-to-video",
        "image_url": module.IMAGES[1],
        "prompt": "mapping: sunlight flickers through the leaves",
        "duration": "5",
    }
    out = result.xcom("from_taskflow")
    assert Path(out["video_path"]).read_bytes() == emulator.video_data(out["generation_id"])
    assert len(posts(emulator)) == 4
    # It waited in its trigger (dag.test runs triggers in-process).
    assert result.events[("from_taskflow", -1)] == ["running", "deferred", "running", "success"]
    assert all("deferred" not in result.events[("by_url", i)] for i in range(3))
    assert_video_links(result, [("from_taskflow", -1), ("by_url", 2)], emulator.base_url)


def assert_video_links(result: Any, tis: list[tuple[str, int]], base_url: str) -> None:
    """The "Kling video" extra link, resolved as the API server does, from the serialized DAG."""
    from urllib.parse import parse_qsl, urlsplit

    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_kling.plugins import supports_gallery
    from airflow_provider_kling.version_compat import AIRFLOW_V_3_1_PLUS

    with create_session() as session:
        serialized = SerializedDagModel.get_dag(result.dag_id, session=session)
        if serialized is None and not AIRFLOW_V_3_1_PLUS:
            return  # 3.0's dag.test() stores no serialized DAG to resolve extra links from
        assert serialized is not None
        for task_id, map_index in tis:
            task = serialized.get_task(task_id)
            assert "Kling video" in task.extra_links
            ti = session.scalar(
                select(TaskInstance).where(
                    TaskInstance.dag_id == result.dag_id,
                    TaskInstance.run_id == result.run_id,
                    TaskInstance.task_id == task_id,
                    TaskInstance.map_index == map_index,
                )
            )
            link = task.get_extra_links(ti, "Kling video")
            xcom = result.xcom(task_id, map_index=map_index)
            if xcom.get("video_path") and supports_gallery():
                # A downloaded video opens its gallery page, which lasts (the signed URL expires).
                url = urlsplit(link)
                assert url.path.endswith("/kling/")
                query = dict(parse_qsl(url.query))
                assert query == {"dag_id": result.dag_id, "run_id": result.run_id, "task_id": task_id}
            else:
                assert link == xcom["video_url"]
                assert link.startswith(base_url)


def test_no_second_payment_after_an_ambiguous_post_or_a_taken_file(emulator, airflow_db, test_out):
    # Where the service offers no /v2/logs, the lost POST cannot be looked up: at most once, as ever
    # (with the route, tests/integration/test_exactly_once.py finds it).
    emulator.configure_account(disabled=["logs"])
    emulator.inject("500", method="POST", after_create=True)
    (test_out / "taken.mp4").write_bytes(b"an earlier video")
    module = load_dag_file(TEST_DAGS / "kling_paid_once.py")
    result = run_dag(module.dag)
    events = failure_events(test_out)

    for task_id in ("ambiguous_post", "existing_file"):
        ti = result.ti(task_id)
        assert (ti.state, ti.try_number, ti.max_tries) == ("failed", 1, 2), task_id
        (event,) = events[task_id]
        assert event["exception"] == "AirflowFailException", event
    # One generation was created and paid for; the task did not send a second POST.
    (_post,) = posts(emulator, "ambiguous_post:")
    assert len(emulator.generations) == 1
    assert "may have created a paid generation" in events["ambiguous_post"][0]["message"]
    assert "answered 500" in events["ambiguous_post"][0]["message"]
    # The taken file was noticed before the POST, and kept.
    assert not posts(emulator, "existing_file:")
    message = events["existing_file"][0]["message"]
    assert "download_to" in message
    assert "overwrite=True" in message
    assert (test_out / "taken.mp4").read_bytes() == b"an earlier video"
