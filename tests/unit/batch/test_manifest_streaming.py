"""Catalog-scale manifests: validated as they stream, state writes that cost what changed, resumptions
that validate nothing again (``batch.manifest``, ``batch.validation`` and ``batch.state``).

The 100,000-row cases validate in a child interpreter and read its peak RSS from ``/proc``: a
validation that builds a list of the rows (or their requests) grows by well over 100 MB there.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_kling.batch.manifest import STATS, iter_manifest
from airflow_provider_kling.batch.state import ROWS_PER_SHARD, BatchState
from airflow_provider_kling.batch.validation import ManifestInvalid, validate_manifest
from tests.support.batch import IMAGE, batch_operator, operator_context
from tests.support.dags import posts

MODEL = "kling-video/v1/standard/image-to-video"
ROWS = 100_000
#: Peak RSS growth allowed while 100,000 rows validate (the keys alone take ~10 MB; a row list ~150 MB+).
BOUND_MB = 48


def catalog_rows(n: int, tag: str = "sku") -> Any:
    for i in range(n):
        yield {"key": f"{tag}-{i:06d}", "image_url": IMAGE, "prompt": f"{tag} {i} turning", "duration": 5}


def write_jsonl(path: Path, rows: Any) -> str:
    with path.open("w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return str(path)


def write_csv(path: Path, rows: Any) -> str:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["key", "image_url", "prompt", "duration"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


_CHILD = """
import json, sys
from pathlib import Path
from airflow_provider_kling.batch.validation import validate_manifest

def kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])

def check(path):
    return validate_manifest(
        path, model=sys.argv[3], parameters=None, key_field="key", check_capabilities=True
    )

check(sys.argv[1])  # warm up: the catalog, pydantic's validators
before = kb("VmRSS")
result = check(sys.argv[2])
print(json.dumps({"rows": result.rows, "growth_kb": kb("VmHWM") - before}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
@pytest.mark.same_on_every_minor  # a child Python reading a file: nothing of Airflow's minor in it
@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_100000_row_manifest_validates_in_bounded_memory(tmp_path, kind):
    write = write_jsonl if kind == "jsonl" else write_csv
    small = write(tmp_path / f"small.{kind}", catalog_rows(50, "warm"))
    big = write(tmp_path / f"big.{kind}", catalog_rows(ROWS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, small, big, MODEL],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["rows"] == ROWS
    assert found["growth_kb"] < BOUND_MB * 1024, f"peak RSS grew {found['growth_kb'] / 1024:.0f} MB"


def test_rows_stream_one_at_a_time(tmp_path):
    """The first row is there before the file's end is read: a file cut short after it still yields it."""
    path = tmp_path / "m.jsonl"
    write_jsonl(path, catalog_rows(3))
    stream = iter_manifest(str(path))
    first = next(stream)
    assert first.number == 1
    assert first.row is not None
    assert first.row["key"] == "sku-000000"
    with path.open("a") as out:  # appended after the first row was read: the stream sees it
        out.write(json.dumps({"key": "late", "prompt": "p", "image_url": IMAGE}) + "\n")
    assert [line.row["key"] for line in stream if line.row] == ["sku-000001", "sku-000002", "late"]


def test_the_first_problems_are_named_by_row_line_and_key(tmp_path):
    rows = list(catalog_rows(40))
    rows[3]["duration"] = 7
    rows[9]["key"] = rows[2]["key"]
    rows[30]["prompt"] = ""
    path = tmp_path / "m.jsonl"
    write_jsonl(path, rows)
    with path.open("a") as out:
        out.write("{not json\n")
    with pytest.raises(ManifestInvalid) as caught:
        validate_manifest(
            str(path), model=MODEL, parameters=None, key_field="key", check_capabilities=True, max_errors=2
        )
    exc = caught.value
    assert exc.rows == 40
    assert exc.bad_rows == 4
    assert exc.total_problems >= 4
    assert len(exc.problems) == 2
    message = str(exc)
    assert "4 of 40 manifest rows are not valid; nothing was sent" in message
    assert "row 3 (line 4, key 'sku-000003') duration" in message
    assert "row 9 (line 10, key 'sku-000002')" in message
    assert "also the key of row 2" in message
    assert "more problem(s)" in message
    assert "sku-000030" not in message  # past the first two


def test_a_csv_problem_names_its_line(tmp_path):
    rows = list(catalog_rows(5))
    rows[4]["duration"] = 7
    path = write_csv(tmp_path / "m.csv", rows)
    with pytest.raises(ManifestInvalid, match=r"row 4 \(line 6, key 'sku-000004'\) duration"):
        validate_manifest(path, model=MODEL, parameters=None, key_field="key", check_capabilities=True)


# ------------------------------------------------------------------------------------ resumptions
def test_a_resumption_of_an_unchanged_manifest_validates_nothing_again(emulator, tmp_path):
    rows = [{**row, "prompt": f"{row['prompt']} [seconds:0.2]"} for row in catalog_rows(6, "resume")]
    manifest = write_jsonl(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"

    before = STATS.rows_validated
    with pytest.raises(TaskDeferred):  # 4 rows in flight, 2 to send
        batch_operator(manifest, out, deferrable=True).execute(operator_context("scale"))
    assert STATS.rows_validated - before == 6
    assert len(posts(emulator, "resume")) == 4

    before = STATS.rows_validated
    with pytest.raises(TaskDeferred):  # the trigger's event resumes it: nothing validated again
        batch_operator(manifest, out, deferrable=True).execute_complete(
            operator_context("scale"), {"finished": {}}
        )
    assert STATS.rows_validated == before

    os.utime(manifest, (1_000_000_000, 1_000_000_000))  # touched (a copy, a sync), same content
    summary = batch_operator(manifest, out).execute(operator_context("scale", try_number=2))
    assert STATS.rows_validated == before
    assert (summary["completed"], summary["posts"]) == (6, 2)  # the 2 rows left; none paid twice
    assert len(posts(emulator, "resume")) == 6

    # A changed manifest is validated again, every row, and a bad row stops it before any POST.
    rows.append({**rows[0], "key": "resume-x", "duration": 7})
    write_jsonl(Path(manifest), rows)
    with pytest.raises(AirflowFailException, match=r"row 6 \(line 7, key 'resume-x'\) duration"):
        batch_operator(manifest, out).execute(operator_context("scale", try_number=3))
    assert STATS.rows_validated - before == 7
    assert len(posts(emulator, "resume")) == 6


# ------------------------------------------------------------------------------------ state writes
class _Store:
    """A ``task_state_store`` as Airflow 3.3 hands it to a task: get and set of JSON values by key."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sets = 0
        self.bytes = 0

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        data = json.dumps(value)
        self.sets += 1
        self.bytes += len(data)
        self.values[key] = json.loads(data)


def _checkpoint_cost(rows: int, changed: int) -> tuple[int, int]:
    """(writes, bytes) of one checkpoint changing ``changed`` neighbouring rows of a ``rows``-row batch."""
    store = _Store()
    keys = [f"sku-{i:06d}" for i in range(rows)]
    state = BatchState({"ti": None, "task_state_store": store}, "unused", keys)
    for key in keys:  # every row recorded once, as a finished batch has them
        state.update(key, spec="s" * 32, st="done", id="g" * 36, video=f"/out/{key}.mp4", size=1000)
    state.flush()
    store.sets = store.bytes = 0
    state = BatchState({"ti": None, "task_state_store": store}, "unused", keys)  # a resumption
    state.save_rows({key: {"st": "submitted", "id": "n" * 36} for key in keys[:changed]})
    state.flush()
    return store.sets, store.bytes


def test_a_checkpoint_writes_what_changed_not_every_row():
    small_writes, small_bytes = _checkpoint_cost(1_000, 3)
    big_writes, big_bytes = _checkpoint_cost(ROWS, 3)
    assert (small_writes, big_writes) == (2, 2)  # the changed rows' shard and the meta record
    assert big_bytes < small_bytes * 1.1  # not growing with the batch
    one_shard = ROWS_PER_SHARD * 200  # a shard's records are ~150 bytes each
    assert big_bytes < one_shard

    writes, written = _checkpoint_cost(ROWS, ROWS_PER_SHARD * 3)
    assert writes == 4  # three shards and the meta record
    assert written < 3 * one_shard
