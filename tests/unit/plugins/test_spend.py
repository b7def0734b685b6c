"""The gallery's spend per DAG and day: the USD the service billed, from real task results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dags import TEST_DAGS, load_dag_file, run_dag
from tests.support.gallery import signed_in_gallery

pytestmark = pytest.mark.airflow3


def test_billed_usd_counts_only_what_the_service_reported() -> None:
    from airflow_provider_kling.plugins.spend import billed_usd

    assert billed_usd({"usd_spent": 0.42}) == 0.42
    assert billed_usd({"usage": {"usd_spent": 1.5, "tokens_used": 9}}) == 1.5
    assert billed_usd({"usage": {"tokens_used": 420000}}) is None  # never priced by guess
    assert billed_usd({"usd_spent": 0.42, "reused": True}) == 0.0
    assert billed_usd({"usd_spent": True}) is None


@pytest.fixture
def client(airflow_db: Path, emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from airflow_provider_kling.plugins import supports_gallery

    if not supports_gallery():
        pytest.skip("the gallery needs Airflow 3.1+")
    with signed_in_gallery(monkeypatch) as test_client:
        yield test_client


def test_the_gallery_sums_the_usd_billed_per_dag_and_day(client: Any, emulator: Any) -> None:
    result = run_dag(load_dag_file(TEST_DAGS / "kling_budget.py").dag)
    billed = result.xcom("generate")["usd_spent"]
    assert billed is not None
    assert billed > 0
    # This run only: other tests of the session ran the same DAG today.
    asked = {"dag_id": "kling_budget_single", "run_id": result.run_id}
    spend = client.get("/api/generations", params=asked).json()["spend"]
    assert spend == [
        {
            "dag_id": "kling_budget_single",
            "day": spend[0]["day"],
            "usd": pytest.approx(billed),
            "generations": 1,
            "unpriced": 0,
        }
    ]
    page = client.get("/", params=asked).text
    assert 'id="spend"' in page
    assert f"{billed:.4f}" in page
