"""Exactly once after a lost submit answer: the POST's client request id is found in ``/v2/logs``.

The emulator creates the generation and then drops the connection mid-answer (``reset_mid``), and its
``/v2/logs`` shows the row only after ``logs_delay`` (an analytics pipeline lags). The single operator
runs through ``dag.test()``; the batch operator runs in this process as the task runner calls it. With
the logs route turned off, today's at-most-once behaviour and its report are unchanged.
"""

from __future__ import annotations

import json
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.operators.kling import KlingBatchVideoOperator
from tests.support.connections import API_KEY, use_connection
from tests.support.dags import TEST_DAGS, failure_events, load_dag_file, posts, run_dag
from tests.support.hooks import REQUEST, make_hook

#: Look every 0.2 s; send again when a POST is not logged within the window.
FAST = {"reconcile_poll_seconds": 0.2, "reconcile_window_seconds": 30}
IMAGE = "https://images.example.org/catalog/sku.png"


@pytest.fixture
def test_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLING_TEST_OUT", str(tmp_path))
    return tmp_path


def connect(emulator: Any, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    use_connection(monkeypatch, "kling_default", host=emulator.base_url, password=API_KEY, extra=extra)


# ------------------------------------------------------------------------------------ one operator
@pytest.mark.airflow33
def test_a_lost_answer_reconnects_to_its_generation_with_one_post(
    emulator: Any, airflow_db: Any, test_out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(emulator, monkeypatch, **FAST)
    emulator.configure_account(logs_delay=1.0)
    emulator.inject("reset_mid", method="POST")
    result = run_dag(load_dag_file(TEST_DAGS / "kling_exactly_once.py").dag)

    assert result.state_of("lost_answer") == "success", failure_events(test_out)
    (post,) = posts(emulator)
    (generation,) = emulator.generations.values()
    out = result.xcom("lost_answer")
    assert out["generation_id"] == generation.id
    # The id the POST carried is the one reported, and it names the task.
    assert out["client_request_id"] == post.client_request_id
    assert out["client_request_id"].startswith("kl:kling_exactly_once:lost_answer:")
    assert out["usd_spent"] == pytest.approx(generation.usd)
    assert result.ti("lost_answer").try_number == 1


@pytest.mark.airflow33
def test_a_post_the_logs_never_show_is_sent_again_after_the_bound(
    emulator: Any, airflow_db: Any, test_out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500 before anything was created: no log row ever appears, so after the bound it goes again."""
    connect(emulator, monkeypatch, reconcile_poll_seconds=0.2, reconcile_window_seconds=1)
    emulator.inject("500", method="POST")
    result = run_dag(load_dag_file(TEST_DAGS / "kling_exactly_once.py").dag)

    assert result.state_of("lost_answer") == "success", failure_events(test_out)
    first, second = posts(emulator)
    assert first.client_request_id == second.client_request_id  # the same request, the same id
    assert len(emulator.generations) == 1
    assert emulator.count("GET", "/v2/logs") >= 2  # looked again before sending again


@pytest.mark.airflow33
def test_without_the_logs_route_a_lost_answer_fails_as_today(
    emulator: Any, airflow_db: Any, test_out: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    connect(emulator, monkeypatch, **FAST)
    emulator.configure_account(disabled=["logs"])
    emulator.inject("reset_mid", method="POST")
    result = run_dag(load_dag_file(TEST_DAGS / "kling_exactly_once.py").dag)

    ti = result.ti("lost_answer")
    assert (ti.state, ti.try_number) == ("failed", 1)
    (event,) = failure_events(test_out)["lost_answer"]
    assert event["exception"] == "AirflowFailException"
    assert "may have created a paid generation" in event["message"]
    assert len(posts(emulator)) == 1
    assert len(emulator.generations) == 1
    assert "does not offer /v2/logs" in capfd.readouterr().out


# ------------------------------------------------------------------------------------ the batch
def _context(store: Any = None) -> dict[str, Any]:
    ti = types.SimpleNamespace(
        dag_id="exactly_once",
        task_id="batch",
        run_id="run-1",
        map_index=-1,
        try_number=1,
        xcom_push=lambda **kwargs: None,
    )
    return {"ti": ti, "run_id": "run-1"}


def _batch(tmp_path: Path, rows: int) -> tuple[KlingBatchVideoOperator, Path]:
    manifest = tmp_path / "rows.jsonl"
    lines = [{"key": f"k{i}", "image_url": IMAGE, "prompt": f"row {i} [seconds:0.2]"} for i in range(rows)]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    op = KlingBatchVideoOperator(
        task_id="batch",
        manifest=str(manifest),
        output_prefix=str(out),
        deferrable=False,
        poll_interval=0.2,
        max_active=4,
        submit_concurrency=2,
        fail_on_partial_error=False,
    )
    return op, out


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_a_batch_with_lost_answers_ends_with_every_generation_and_no_unknown_row(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(emulator, monkeypatch, **FAST)
    emulator.configure_account(logs_delay=1.0)
    emulator.inject("reset_mid", method="POST", times=3)
    op, out = _batch(tmp_path, 10)
    summary = op.execute(_context())

    assert (summary["completed"], summary["unknown"], summary["failed"]) == (10, 0, 0)
    assert len(emulator.generations) == 10
    assert len(posts(emulator)) == 10  # the three lost answers were found, not sent again
    rows = _results(out)
    assert Counter(r["status"] for r in rows) == {"completed": 10}
    sent = {r.client_request_id for r in posts(emulator)}
    assert {r["client_request_id"] for r in rows} == sent
    assert all(r["client_request_id"].startswith("kl:exactly_once:batch:run-1:-1:k") for r in rows)


def test_a_batch_without_the_logs_route_reports_unknown_rows_as_today(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(emulator, monkeypatch, **FAST)
    emulator.configure_account(disabled=["logs"])
    emulator.inject("reset_mid", method="POST", times=3)
    op, out = _batch(tmp_path, 10)
    summary = op.execute(_context())

    assert (summary["completed"], summary["unknown"]) == (7, 3)
    assert len(posts(emulator)) == 10
    unknown = [r for r in _results(out) if r["status"] == "unknown"]
    assert len(unknown) == 3
    assert all("may have created a paid generation" in r["error"] for r in unknown)


@pytest.mark.parametrize("value", [0, -5, "ten minutes", float("inf")])
def test_a_bad_lookup_bound_is_refused_before_any_post(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    connect(emulator, monkeypatch, reconcile_window_seconds=value)
    with pytest.raises(KlingValidationError) as info:
        make_hook().submit(REQUEST, client_request_id="kl:dag:task:run:-1:0123")
    assert "connection 'kling_default' extra reconcile_window_seconds" in str(info.value)
    assert "must be a number of seconds > 0" in str(info.value)
    assert posts(emulator) == []
