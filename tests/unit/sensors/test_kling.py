"""KlingGenerationSensor in poke and deferrable mode, through ``dag.test()`` against the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_kling.operators.kling import RESULT_KEYS
from airflow_provider_kling.sensors.kling import KlingGenerationSensor
from tests.support.dags import TEST_DAGS, failure_events, load_dag_file, run_dag
from tests.support.polls import NEVER_BY_ITSELF, complete_after_first_poll

# dag.test() from a bundle, task_state_store and airflow.sdk DAGs: Airflow 3 only.
pytestmark = pytest.mark.airflow3


@pytest.fixture
def test_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLING_TEST_OUT", str(tmp_path))
    return tmp_path


def test_sensor_modes(emulator, airflow_db, test_out, monkeypatch):
    # Each sensor's first poll finds its generation pending, however loaded the machine: the generations
    # end only when a poll of them has been answered.
    monkeypatch.setattr(emulator, "generation_seconds", NEVER_BY_ITSELF)
    module = load_dag_file(TEST_DAGS / "kling_sensor_modes.py")
    with complete_after_first_poll(emulator):
        result = run_dag(module.dag)
    events = failure_events(test_out)

    for name in ("poke", "deferred"):
        gen_id = result.xcom(f"submit_{name}", key="generation_id")
        assert result.state_of(f"wait_{name}") == "success"
        out = result.xcom(f"wait_{name}")
        assert out["generation_id"] == gen_id
        assert out["status"] == "completed"
        assert out["video_url"].startswith(emulator.base_url)
        assert result.xcom(f"wait_{name}", key="kling_video_url") == out["video_url"]
        # The operators' XCom shape, the model read from the <uuid>:<model> id.
        assert tuple(out) == RESULT_KEYS
        assert out["model"] == "kling-video/v1/standard/image-to-video"
        # Every poll of this generation was for the sensor (submit does not wait).
        polls = [r for r in emulator.requests if r.method == "GET" and r.query.get("generation_id") == gen_id]
        assert len(polls) >= 2, name  # pending at first, then completed

    # Poke mode polled from the worker; deferrable mode handed the wait to its trigger.
    assert "deferred" not in result.events[("wait_poke", -1)]
    assert result.events[("wait_deferred", -1)] == ["running", "deferred", "running", "success"]
    classpath, kwargs = result.triggers[("wait_deferred", -1)]
    assert classpath == "airflow_provider_kling.triggers.kling.KlingGenerationTrigger"
    assert kwargs["generation_id"] == result.xcom("submit_deferred", key="generation_id")
    assert kwargs["poll_interval"] == 0.2

    # A generation the service ended in error fails the sensor at once, in both modes, despite retries=2.
    for name, message in (
        ("poke_error", "Could not detect face in the image"),
        ("deferred_error", "rejected by the content policy"),
    ):
        ti = result.ti(f"wait_{name}")
        assert (ti.state, ti.try_number, ti.max_tries) == ("failed", 1, 2), name
        (event,) = events[f"wait_{name}"]
        assert event["exception"] == "AirflowFailException"
        assert result.xcom(f"submit_{name}", key="generation_id") in event["message"]
        assert message in event["message"]

    # A malformed id is refused before any request.
    ti = result.ti("wait_invalid_id")
    assert (ti.state, ti.try_number) == ("failed", 1)
    (event,) = events["wait_invalid_id"]
    assert event["exception"] == "AirflowFailException"
    assert "generation_id" in event["message"]
    assert not [r for r in emulator.requests if r.query.get("generation_id") == "not an id!"]


def test_poll_interval_is_a_deprecated_name_of_poke_interval():
    gen_id = "3f2a9c1e-5d4b-4c1a-9e8f-0b1c2d3e4f50:kling-video/v1/standard/image-to-video"
    with pytest.warns(DeprecationWarning, match="use poke_interval"):
        sensor = KlingGenerationSensor(task_id="old_name", generation_id=gen_id, poll_interval=3)
    assert (sensor.poke_interval, sensor.poll_interval) == (3, 3.0)
    # One name, used in every mode (the trigger gets the same interval).
    sensor = KlingGenerationSensor(task_id="new_name", generation_id=gen_id, poke_interval=4, deferrable=True)
    assert sensor.poll_interval == 4.0
