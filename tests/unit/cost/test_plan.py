"""``python -m airflow_provider_kling plan``: every example DAG's table with 0 POSTs to the emulator,
templates rendered for the run (conf, logical date), mapped tasks over literal lists expanded, and a
bad request failing the plan with the task and the field named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling.__main__ import main
from airflow_provider_kling.cost import prices
from tests.support.dags import EXAMPLES, ROOT

EXAMPLE_DAGS = {
    "example_kling_avatar": ("avatar", "unknown"),
    "example_kling_basic": ("image_to_video", "0.4200"),
    "example_kling_catalog_batch": ("catalog_videos", "0.8400"),  # 3 rows x 5 s x 0.056
    "example_kling_chain": ("clip", "0.4900"),  # the edit's input is the clip: unknown until it exists
    "example_kling_daily_asset": ("daily_clip", "0.4200"),
    "example_kling_daily_asset_consumer": (None, None),
    "example_kling_pipeline": ("generate", "unknown"),  # mapped over an upstream task's output
    "example_kling_review": ("generate", "0.2800"),
    "example_kling_sensor": ("submit", "0.4200"),
    "example_kling_text_to_video": ("text_to_video", "0.3500"),
    "example_kling_v3_audio": ("image_to_video_with_audio", "1.7920"),
}

MAPPED_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_kling.operators.kling import KlingImageToVideoOperator, KlingTextToVideoOperator

with DAG(dag_id="plan_mapped", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         params={"seconds": 5}):
    KlingTextToVideoOperator.partial(
        task_id="shots", model="kling-video/v1.6/pro/text-to-video"
    ).expand(prompt=["a fox", "a hen"], duration=[5, 10])
    KlingImageToVideoOperator(
        task_id="templated", image_url="https://example.com/{{ ds }}.png",
        prompt="on {{ ds }}", duration="{{ params.seconds }}",
    )
"""

BAD_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

with DAG(dag_id="plan_bad", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    KlingImageToVideoOperator(task_id="good", image_url="https://example.com/a.png", prompt="fine")
    KlingImageToVideoOperator(
        task_id="too_long", image_url="https://example.com/a.png", prompt="x", duration=7
    )
"""


@pytest.fixture(autouse=True)
def _fresh(emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    prices.forget()
    manifest = tmp_path / "catalog.jsonl"
    manifest.write_text(
        "".join(json.dumps({"key": f"p{i}", "prompt": f"product {i}"}) + "\n" for i in range(3))
    )
    monkeypatch.setenv("KLING_CATALOG_MANIFEST", str(manifest))
    monkeypatch.setenv("KLING_DOWNLOAD_DIR", str(tmp_path / "videos"))
    yield
    prices.forget()


def _generation_posts(emulator: Any) -> int:
    return sum(1 for r in emulator.requests if r.method == "POST")


#: Example DAGs that exist only from a later minor, with the marker that deselects them before it.
LATER_EXAMPLES = {
    # Human-in-the-loop operators (HITLBranchOperator) arrived in Airflow 3.1: on 3.0 the file defines no DAG.
    "example_kling_review": pytest.mark.airflow31,
}


@pytest.mark.airflow3  # the example DAGs are airflow.sdk DAGs
@pytest.mark.parametrize(
    "dag_id", [pytest.param(d, marks=LATER_EXAMPLES.get(d, ())) for d in sorted(EXAMPLE_DAGS)]
)
def test_plan_of_every_example_dag_prints_its_table_and_sends_nothing(
    emulator: Any, capsys: pytest.CaptureFixture[str], dag_id: str
) -> None:
    code = main(["plan", dag_id, "--dag-folder", str(EXAMPLES), "--logical-date", "2026-05-01"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Plan of {dag_id} for a run at 2026-05-01T00:00:00+00:00" in out
    assert "Total: $" in out
    task, figure = EXAMPLE_DAGS[dag_id]
    if task is not None:
        line = next(line for line in out.splitlines() if line.startswith(task + " "))
        assert figure in line, line
    assert _generation_posts(emulator) == 0
    assert emulator.count("POST") == 0


@pytest.mark.airflow3  # the example DAGs are airflow.sdk DAGs
def test_the_catalog_batch_is_one_row_with_its_count_and_sum(
    emulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "example_kling_catalog_batch", "--dag-folder", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert "batch of 3 rows" in out
    assert "Total: $0.8400 for 1 task(s)" in out


def test_templates_render_for_the_run_and_literal_maps_expand(
    emulator: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "plan_mapped.py").write_text(textwrap.dedent(MAPPED_DAG))
    code = main(["plan", "plan_mapped", "--dag-folder", str(folder), "--conf", '{"seconds": 10}'])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("shots", "templated"))}
    assert sorted(rows) == ["shots[0]", "shots[1]", "shots[2]", "shots[3]", "templated"]
    # 2 prompts x (5 s at 0.098, 10 s at 0.091 per second), and the conf's 10 s at 0.084.
    assert "0.4900" in rows["shots[0]"]
    assert "0.9100" in rows["shots[1]"]
    assert "10 s" in rows["templated"]
    assert "0.8400" in rows["templated"]
    assert "Total: $3.6400 for 5 task(s)" in out
    assert emulator.count("POST") == 0


def test_a_bad_request_fails_the_plan_naming_the_task_and_the_field(emulator: Any, tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "plan_bad.py").write_text(textwrap.dedent(BAD_DAG))
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_kling", "plan", "plan_bad", "--dag-folder", str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: task 'too_long': duration:" in proc.stderr
    assert "good" in proc.stdout
    assert "0.4200" in proc.stdout  # the valid task is still planned
    assert emulator.count("POST") == 0


def test_an_unknown_dag_exits_2_naming_it(emulator: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "no_such_dag", "--dag-folder", str(EXAMPLES)]) == 2
    assert "no DAG 'no_such_dag'" in capsys.readouterr().err


def test_the_table_above_covers_every_example_dag() -> None:
    import re

    found = set()
    for path in EXAMPLES.glob("*.py"):
        found |= set(re.findall(r'^\s+dag_id="([^"]+)"', path.read_text(), re.MULTILINE))
    assert found == set(EXAMPLE_DAGS)
