"""OpenLineage events and StatsD metrics from a real ``airflow dags test`` run.

Airflow runs in its own process with the real OpenLineage provider (file transport) and its StatsD
client pointed at a UDP socket of this test; tasks wait in the worker and in the (in-process)
triggerer, against the emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling.emulator import KlingEmulator
from tests.support.connections import API_KEY
from tests.support.statsd import StatsdListener, kling_metrics

# One process runs the module (pytest-xdist group): its observed run, a whole `airflow dags test`,
# then happens once per suite, not once per worker that gets one of its tests.
pytestmark = [pytest.mark.airflow3, pytest.mark.xdist_group("observed_run")]

SIGNATURE = "secret-signature"


@pytest.fixture(scope="module")
def observed_run(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("observed")
    listener = StatsdListener()
    # 2026 answers: opaque ids and credits_used + usd_spent, as the service bills today.
    with KlingEmulator(api_key=API_KEY, generation_seconds=0.6, answer_style="2026") as emu:
        connection = {
            "conn_type": "kling",
            "host": emu.base_url,
            "password": API_KEY,
            "extra": {"allow_loopback_downloads": True},
        }
        env = {
            **os.environ,
            "AIRFLOW_CONN_KLING_DEFAULT": json.dumps(connection),
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
            # Tags travel in the metric name (InfluxDB line style), so the test can read them.
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(out / "lineage.jsonl"), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "kling-tests",
            # The listener gives up on a task's event after 10 s by default: a loaded CI machine
            # (other test processes running beside this one) must not lose an event to it.
            "AIRFLOW__OPENLINEAGE__EXECUTION_TIMEOUT": "300",
            "KLING_TEST_OUT": str(out),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", "kling_observed"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        generations = {g.prompt: g.id for g in emu.generations.values()}
    listener.close()
    events = [json.loads(line) for line in (out / "lineage.jsonl").read_text().splitlines() if line.strip()]
    return {
        "proc": proc,
        "packets": listener.packets,
        "events": events,
        "lineage_text": (out / "lineage.jsonl").read_text(),
        "generations": generations,
        "out": out,
    }


def task_event(events: list[dict[str, Any]], task_id: str, kind: str) -> dict[str, Any]:
    (event,) = [
        e for e in events if e["job"]["name"] == f"kling_observed.{task_id}" and e["eventType"] == kind
    ]
    return event


def test_the_run_ends_as_expected(observed_run: dict[str, Any]) -> None:
    # One task ends in the service's error, so the run fails; the others succeed.
    assert "DagRun failed" in observed_run["proc"].stdout + observed_run["proc"].stderr
    assert len(observed_run["generations"]) == 3


def test_metrics_count_generations_with_low_cardinality_tags(observed_run: dict[str, Any]) -> None:
    metrics = kling_metrics(observed_run["packets"])
    names = {name for name, _, _ in metrics}
    assert names >= {
        "kling.generations.submitted",
        "kling.generations.finished",
        "kling.generation.seconds",
        "kling.credits_used",
    }
    for name, tags, _ in metrics:
        # Only the spend carries the DAG, so it can be attributed; the others stay per model.
        assert set(tags) <= ({"model", "dag"} if name == "kling.usd_spent" else {"model", "outcome"})
    submitted = [tags["model"] for name, tags, _ in metrics if name == "kling.generations.submitted"]
    assert sorted(submitted) == sorted(
        ["kling-video/v1/standard/image-to-video"] * 2 + ["klingai/video-v3-pro-text-to-video"]
    )
    outcomes = sorted(
        (tags["model"], tags["outcome"]) for name, tags, _ in metrics if name == "kling.generations.finished"
    )
    assert outcomes == [
        ("kling-video/v1/standard/image-to-video", "completed"),
        ("kling-video/v1/standard/image-to-video", "failed"),
        ("klingai/video-v3-pro-text-to-video", "completed"),
    ]
    credits = sum(int(value.split("|")[0]) for name, _, value in metrics if name == "kling.credits_used")
    assert credits > 0
    timers = [value for name, _, value in metrics if name == "kling.generation.seconds"]
    assert timers
    assert all(value.endswith("|ms") for value in timers)


def test_spend_is_counted_per_dag_and_model(observed_run: dict[str, Any]) -> None:
    """The USD each completed generation was billed, as kling.usd_spent tagged by DAG and model."""
    metrics = kling_metrics(observed_run["packets"])
    spent = [(tags, value) for name, tags, value in metrics if name == "kling.usd_spent"]
    # The two completed generations; the failed one was billed nothing.
    assert sorted(tags["model"] for tags, _ in spent) == [
        "kling-video/v1/standard/image-to-video",
        "klingai/video-v3-pro-text-to-video",
    ]
    assert {tags["dag"] for tags, _ in spent} == {"kling_observed"}
    for _, value in spent:
        amount, kind = value.split("|")
        assert kind == "c"
        assert float(amount) > 0


def test_lineage_of_a_completed_generation(observed_run: dict[str, Any]) -> None:
    event = task_event(observed_run["events"], "in_worker", "COMPLETE")
    inputs = [(d["namespace"], d["name"]) for d in event["inputs"]]
    assert inputs == [("https://images.example.com", "/cat.png"), ("https://images.example.com", "/last.png")]
    (output,) = event["outputs"]
    assert output["namespace"] == "file"
    assert output["name"].startswith(str(observed_run["out"] / "videos"))
    assert output["name"].endswith(".mp4")
    assert Path(output["name"]).exists()
    facets = event["run"]["facets"]
    generation_id = observed_run["generations"]["a cat turns its head"]
    assert facets["externalQuery"]["externalQueryId"] == generation_id
    assert facets["externalQuery"]["source"] == "kling"
    kling = facets["kling_generation"]
    assert (kling["generationId"], kling["model"]) == (
        generation_id,
        "kling-video/v1/standard/image-to-video",
    )
    assert kling["usage"]["credits_used"] > 0
    assert "usd_spent" in kling["usage"]


def test_lineage_of_a_deferred_and_of_a_failed_generation(observed_run: dict[str, Any]) -> None:
    deferred = task_event(observed_run["events"], "in_triggerer", "COMPLETE")
    assert deferred["run"]["facets"]["kling_generation"]["model"] == "klingai/video-v3-pro-text-to-video"
    assert deferred["outputs"] == []  # not downloaded: the expiring URL is no dataset
    failed = task_event(observed_run["events"], "refused_by_the_service", "FAIL")
    generation_id = observed_run["generations"]["[error] a dog"]
    assert failed["run"]["facets"]["externalQuery"]["externalQueryId"] == generation_id
    assert [(d["namespace"], d["name"]) for d in failed["inputs"]] == [
        ("https://images.example.com", "/dog.png")
    ]


def test_lineage_holds_no_signed_url_and_no_key(observed_run: dict[str, Any]) -> None:
    text = observed_run["lineage_text"]
    assert SIGNATURE not in text
    assert API_KEY not in text
    assert "cacheKey=" not in text  # the service's signed video URL
