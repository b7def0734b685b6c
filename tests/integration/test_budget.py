"""Estimates and caps through Airflow (``dag.test()``) against the emulator over real sockets.

The issue's done-when figures: a 20-row batch whose ``max_usd`` is worth 12 rows sends exactly 12
POSTs and reports 8 ``skipped_budget``; a ``daily_usd_cap`` already reached sends 0 POSTs; an unknown
price with a cap set sends 0 POSTs; each error names the cap and the figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling.cost import budget, prices
from tests.support.connections import API_KEY, use_connection
from tests.support.dags import TEST_DAGS, failure_events, load_dag_file, posts, run_dag

# dag.test() of airflow.sdk DAGs and the test DAGs' helpers: Airflow 3 only.
pytestmark = pytest.mark.airflow3

MODEL = "kling-video/v1/standard/image-to-video"
#: The emulator's price of one 5-second generation of MODEL (0.084 USD per second).
ROW_USD = 0.42


@pytest.fixture(autouse=True)
def _env(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    prices.forget()
    budget.forget()
    monkeypatch.setenv("KLING_TEST_OUT", str(tmp_path / "events"))
    for name in ("KLING_MAX_USD", "KLING_DRY_RUN", "KLING_BUDGET_CONN", "KLING_MAX_ACTIVE"):
        monkeypatch.delenv(name, raising=False)
    yield
    prices.forget()
    budget.forget()


def _single(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return run_dag(load_dag_file(TEST_DAGS / "kling_budget.py").dag)


def _batch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rows: int, **env: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(
                {"key": f"row-{i:02d}", "image_url": "https://example.com/b.png", "prompt": f"row {i}"}
            )
            + "\n"
            for i in range(rows)
        )
    )
    conf = {"manifest": str(manifest), "output_prefix": str(tmp_path / "out")}
    return run_dag(load_dag_file(TEST_DAGS / "kling_budget.py").dag_batch, run_conf=conf)


def _failure(tmp_path: Path, task_id: str) -> str:
    return str(failure_events(tmp_path / "events")[task_id][-1]["message"])


def test_the_estimate_is_logged_and_returned_beside_the_billed_usage(emulator: Any, monkeypatch) -> None:
    result = _single(monkeypatch)
    assert result.state == "success"
    out = result.xcom("generate")
    assert out["estimated_usd"] == pytest.approx(ROW_USD)
    gen = emulator.generations[out["generation_id"]]
    assert gen.usd == pytest.approx(out["estimated_usd"])


def test_max_usd_below_the_estimate_sends_nothing_and_names_the_figures(
    emulator: Any, monkeypatch, tmp_path: Path
) -> None:
    result = _single(monkeypatch, KLING_MAX_USD="0.4")
    assert result.state == "failed"
    assert posts(emulator) == []
    message = _failure(tmp_path, "generate")
    assert "max_usd of $0.4000" in message
    assert "$0.4200" in message
    assert "$0.0000 is already spent" in message


def test_max_usd_at_the_estimate_pays(emulator: Any, monkeypatch) -> None:
    result = _single(monkeypatch, KLING_MAX_USD=str(ROW_USD))
    assert result.state == "success"
    assert len(posts(emulator)) == 1


def test_dry_run_validates_estimates_and_pays_nothing(emulator: Any, monkeypatch) -> None:
    result = _single(monkeypatch, KLING_DRY_RUN="1", KLING_MAX_USD="0.1")
    assert result.state == "success"
    plan = result.xcom("generate")
    assert plan["dry_run"] is True
    assert plan["estimated_usd"] == pytest.approx(ROW_USD)
    assert plan["over_max_usd"] is True
    assert emulator.count("POST") == 0


def test_a_20_row_batch_with_max_usd_worth_12_rows_sends_12_and_skips_8(
    emulator: Any, monkeypatch, tmp_path: Path
) -> None:
    result = _batch(
        monkeypatch, tmp_path, 20, KLING_MAX_USD=str(round(12 * ROW_USD, 6)), KLING_MAX_ACTIVE="5"
    )
    assert result.state == "failed"
    assert len(posts(emulator)) == 12
    lines = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    statuses = [line["status"] for line in lines]
    assert statuses.count("completed") == 12
    assert statuses.count("skipped_budget") == 8
    skipped = next(line for line in lines if line["status"] == "skipped_budget")
    assert "max_usd of $5.0400" in skipped["error"]
    assert all(line["estimated_usd"] == pytest.approx(ROW_USD) for line in lines)
    message = _failure(tmp_path, "batch")
    assert "8 of 20 rows were not sent" in message
    assert "max_usd $5.0400" in message
    assert "$3.3600 estimated for them" in message  # 8 x 0.42
    assert "$5.0400 spent or in flight" in message  # 12 x 0.42
    assert "$8.4000 for the whole batch" in message


def test_a_batch_logs_its_estimate_and_dry_run_sends_nothing(
    emulator: Any, monkeypatch, tmp_path: Path
) -> None:
    result = _batch(monkeypatch, tmp_path, 20, KLING_DRY_RUN="1")
    assert result.state == "success"
    plan = result.xcom("batch")
    assert plan["rows"] == 20
    assert plan["estimated_usd"] == pytest.approx(20 * ROW_USD)
    assert plan["models"] == {MODEL: {"rows": 20, "estimated_usd": pytest.approx(8.4), "unknown": 0}}
    assert emulator.count("POST") == 0


def test_a_dry_run_reads_relative_media_paths_against_the_manifests_folder(
    emulator: Any, monkeypatch, tmp_path: Path
) -> None:
    """The plan reads a row's ``b.png`` next to the manifest, as the real run does (not the cwd)."""
    import base64

    (tmp_path / "b.png").write_bytes(
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
        )
    )
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"key": "local", "image_url": "b.png", "prompt": "a local image"}) + "\n")
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("KLING_DRY_RUN", "1")
    conf = {"manifest": str(manifest), "output_prefix": str(tmp_path / "out")}
    result = run_dag(load_dag_file(TEST_DAGS / "kling_budget.py").dag_batch, run_conf=conf)
    assert result.state == "success", _failure(tmp_path, "batch")
    assert result.xcom("batch")["rows"] == 1
    assert emulator.count("POST") == 0


def _capped(emulator: Any, monkeypatch, **extra: Any) -> None:
    use_connection(monkeypatch, "kling_capped", host=emulator.base_url, password=API_KEY, extra=extra)
    monkeypatch.setenv("KLING_BUDGET_CONN", "kling_capped")


def _spend(rows: int) -> None:
    """Pay for ``rows`` generations of MODEL today on the key, and wait until they are billed."""
    from tests.support.hooks import make_hook

    with make_hook() as hook:
        for i in range(rows):
            gen = hook.submit(
                {"model": MODEL, "image_url": "https://example.com/s.png", "prompt": f"s{i} [seconds:0.1]"}
            )
            hook.wait_for_generation(gen.id, poll_interval=0.1, timeout=30)


def test_a_daily_cap_already_reached_sends_nothing(emulator: Any, monkeypatch, tmp_path: Path) -> None:
    _spend(2)  # $0.84 today
    before = len(posts(emulator))
    _capped(emulator, monkeypatch, daily_usd_cap=1.0)
    result = _single(monkeypatch)
    assert result.state == "failed"
    assert len(posts(emulator)) == before
    message = _failure(tmp_path, "generate")
    assert "connection 'kling_capped' daily_usd_cap" in message
    assert "of $1.0000 would be crossed" in message
    assert "spent today $0.8400" in message
    assert "$0.4200" in message


def test_a_daily_cap_in_a_batch_skips_the_rows_that_would_cross_it(
    emulator: Any, monkeypatch, tmp_path: Path
) -> None:
    _capped(emulator, monkeypatch, daily_usd_cap=2.0)  # 4 rows of 0.42 fit (1.68), the 5th does not
    result = _batch(monkeypatch, tmp_path, 6, KLING_MAX_ACTIVE="6")
    assert result.state == "failed"
    assert len(posts(emulator)) == 4
    lines = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines].count("skipped_budget") == 2
    assert "daily_usd_cap" in _failure(tmp_path, "batch")


@pytest.mark.parametrize("cap", [{"daily_usd_cap": 5.0}, {"max_usd": 5.0}])
def test_an_unknown_price_with_a_cap_set_sends_nothing(
    emulator: Any, monkeypatch, tmp_path: Path, cap: dict
) -> None:
    emulator.configure_account(disabled={"models": 404})
    _capped(
        emulator, monkeypatch, **({"daily_usd_cap": cap["daily_usd_cap"]} if "daily_usd_cap" in cap else {})
    )
    env = {"KLING_MAX_USD": str(cap["max_usd"])} if "max_usd" in cap else {}
    result = _single(monkeypatch, **env)
    assert result.state == "failed"
    assert posts(emulator) == []
    message = _failure(tmp_path, "generate")
    assert "$5.0000" in message
    assert f"the price of {MODEL!r} is unknown" in message
    assert '"prices"' in message  # says how to give it


def test_an_unknown_price_with_a_batch_cap_sends_nothing(emulator: Any, monkeypatch, tmp_path: Path) -> None:
    emulator.configure_account(disabled={"models": 405})
    result = _batch(monkeypatch, tmp_path, 3, KLING_MAX_USD="10")
    assert result.state == "failed"
    assert posts(emulator) == []
    message = _failure(tmp_path, "batch")
    assert "max_usd $10.0000: 3 row(s) have no known price" in message


def test_a_daily_cap_whose_spend_cannot_be_read_fails_closed(
    emulator: Any, monkeypatch, tmp_path: Path
) -> None:
    emulator.configure_account(disabled={"usage": 404})
    _capped(emulator, monkeypatch, daily_usd_cap=5.0)
    result = _single(monkeypatch)
    assert result.state == "failed"
    assert posts(emulator) == []
    message = _failure(tmp_path, "generate")
    assert "daily_usd_cap" in message
    assert "GET /v2/usage answered 404 (the service does not offer this route)" in message


def test_the_prices_extra_gives_the_price_when_the_catalogue_is_not_offered(
    emulator: Any, monkeypatch
) -> None:
    emulator.configure_account(disabled={"models": 404})
    _capped(emulator, monkeypatch, prices={MODEL: 0.1})
    result = _single(monkeypatch, KLING_MAX_USD="1")
    assert result.state == "success"
    assert result.xcom("generate")["estimated_usd"] == pytest.approx(0.5)


def test_out_of_credits_is_not_retried_and_names_the_connection(
    emulator: Any, monkeypatch, tmp_path: Path
) -> None:
    emulator.configure_account(spending_limit=0.1)
    _capped(emulator, monkeypatch)
    result = _single(monkeypatch)
    assert result.state == "failed"
    event = failure_events(tmp_path / "events")["generate"][-1]
    assert "The API key of connection 'kling_capped' was refused for this call" in event["message"]
    assert "refused the generation for money" in event["message"]
    assert "run out of credits" in event["message"]
    assert len(posts(emulator)) == 1  # the one refused: never sent again
