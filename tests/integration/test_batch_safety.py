"""KlingBatchVideoOperator's durable state, CSV keys and output-prefix lease, against the emulator.

The operator runs in this process (``execute`` with a task-instance context, as the task runner calls
it), so each case is fast and can stop a try exactly where it needs: a state write that fails part
way, a deferral that leaves a batch in progress, a second run on the same prefix.
"""

from __future__ import annotations

import errno
import json
import pathlib
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_kling.batch import STATE_KEY, read_manifest
from tests.support.batch import IMAGE, operator_context, write_manifest
from tests.support.batch import batch_operator as operator
from tests.support.dags import posts

LEASE_NAME = ".kling-batch.lease"  # the documented lease file under the output prefix
PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 300


def rows_of(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"key": f"k{i}", "image_url": IMAGE, "prompt": f"{tag} {i} [seconds:0.2]"} for i in range(n)]


def context(run_id: str = "run-1", try_number: int = 1, store: Any = None) -> dict[str, Any]:
    return operator_context("batch_safety", run_id, try_number, store)


def results(out: Path) -> dict[str, dict[str, Any]]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {line["key"]: line for line in map(json.loads, lines)}


def generation_of(emulator: Any, prompt: str) -> str:
    (gid,) = [g.id for g in emulator.generations.values() if g.prompt == prompt]
    return str(gid)


def state_folder(out: Path, run_id: str = "run-1") -> Path:
    return out / ".kling-batch" / f"batch_safety.batch.{run_id}.-1"


# ------------------------------------------------------------------------------------ state writes
class _DiskFull:
    """A file handle that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, handle: Any, room: int) -> None:
        self._handle = handle
        self._room = room

    def write(self, data: Any) -> int:
        taken = data[: self._room]
        self._handle.write(taken)
        self._handle.flush()
        self._room -= len(taken)
        if len(taken) < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _DiskFull:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def test_a_state_write_that_fails_part_way_keeps_the_old_state(emulator, tmp_path, monkeypatch):
    """The disk fills while the third state write is half done: the try fails, the state before it stays.

    The retry reads the state back (the old code left 64 bytes of JSON there and every retry failed),
    reconnects to the generation recorded before the failure and never sends a recorded row again.
    """
    tag = "diskfull"
    rows = rows_of(4, tag)
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    real_open = pathlib.Path.open
    writes = []

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, mode, *args, **kwargs)
        if ".kling-batch" in self.parts and ("w" in mode or "a" in mode):
            writes.append(self.name)
            if len(writes) == 3:  # paid row k1 and the intent of k2: the disk fills part way
                return _DiskFull(handle, 64)
        return handle

    monkeypatch.setattr(pathlib.Path, "open", open_)
    with pytest.raises(OSError, match="No space left"):
        operator(manifest, out).execute(context())
    monkeypatch.undo()
    assert len(writes) == 3
    assert len(posts(emulator, tag)) == 2  # k0 and k1 were paid; k1's id was lost with the write

    summary = operator(manifest, out).execute(context(try_number=2))
    sent = [p.json["prompt"] for p in posts(emulator, tag)]
    assert sorted(sent) == sorted(r["prompt"] for r in rows)  # one POST per row, none paid twice
    assert summary["posts"] == 2
    found = results(out)
    # k0's id was recorded before the failed write: the retry reconnected to it.
    assert found["k0"]["status"] == "completed"
    assert found["k0"]["generation_id"] == generation_of(emulator, rows[0]["prompt"])
    # k1 was marked as being sent and its id never reached the state: /v2/logs names the generation its
    # client request id created, so the retry reconnected to it and did not send it again.
    assert found["k1"]["status"] == "completed"
    assert found["k1"]["generation_id"] == generation_of(emulator, rows[1]["prompt"])
    assert [found[k]["status"] for k in ("k2", "k3")] == ["completed", "completed"]
    assert not [p for p in state_folder(out).iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["kling_batch-0.json", "kling_batch.json"], ids=["rows", "meta"])
def test_a_corrupt_state_file_fails_closed_naming_it(emulator, tmp_path, name):
    """A state object that is not JSON stops the next try before any POST, naming the object."""
    tag = f"corrupt-{name}"
    rows = rows_of(6, tag)
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(TaskDeferred):  # the batch is in progress: 4 rows in flight, 2 to send
        operator(manifest, out, deferrable=True).execute(context())
    assert len(posts(emulator, tag)) == 4
    broken = state_folder(out) / name
    broken.write_bytes(broken.read_bytes()[:64])

    with pytest.raises(AirflowFailException) as caught:
        operator(manifest, out).execute(context(try_number=2))
    message = str(caught.value)
    assert str(broken) in message
    assert "nothing was sent" in message
    assert "already paid for" in message
    assert len(posts(emulator, tag)) == 4  # not one more POST


def test_paid_ids_are_written_before_the_next_post(emulator, tmp_path):
    """Each POST's id is in ``task_state_store`` before the next POST leaves (not only at the flush).

    The store notes, for every generation id, how many POSTs the emulator had received when the id
    was first written: the k-th generation's id must be written before POST k+1.
    """
    tag = "written-first"
    rows = rows_of(4, tag)
    manifest = write_manifest(tmp_path / "m.jsonl", rows)

    class RecordingStore:
        def __init__(self) -> None:
            self.data: dict[str, Any] = {}
            self.posts_when_written: dict[str, int] = {}

        def get(self, key: str) -> Any:
            return self.data.get(key)

        def set(self, key: str, value: Any) -> None:
            self.data[key] = json.loads(json.dumps(value))
            if key == STATE_KEY:
                return
            sent = len(posts(emulator, tag))
            for record in value.values():
                if record.get("id"):
                    self.posts_when_written.setdefault(record["id"], sent)

    store = RecordingStore()
    summary = operator(manifest, tmp_path / "out").execute(context(store=store))
    assert summary["posts"] == 4
    created = sorted(
        (g for g in emulator.generations.values() if tag in g.prompt), key=lambda g: g.created_at
    )
    assert len(created) == 4
    assert [store.posts_when_written.get(g.id) for g in created] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------ CSV keys
def test_csv_keys_stay_text(emulator, tmp_path):
    """Keys that look like numbers or flags name their files as written; typed columns are decoded."""
    keys = ["12.50", "1e3", "true", "007"]
    lines = ["key,prompt,image_url,duration,cfg_scale"]
    lines += [f"{key},csv key {key} [seconds:0.2],{IMAGE},5,0.5" for key in keys]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    parsed = read_manifest(str(manifest))
    assert [row["key"] for row in parsed] == keys
    assert (parsed[0]["duration"], parsed[0]["cfg_scale"]) == (5, 0.5)

    out = tmp_path / "out"
    summary = operator(str(manifest), out).execute(context())
    assert summary["completed"] == 4
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(f"{key}.mp4" for key in keys)
    found = results(out)
    assert sorted(found) == sorted(keys)
    assert all(Path(found[key]["video"]).name == f"{key}.mp4" for key in keys)
    sent = posts(emulator, "csv key")
    assert {p.json["cfg_scale"] for p in sent} == {0.5}


# ------------------------------------------------------------------------------------ the lease
def test_a_second_run_on_the_same_prefix_is_refused_before_any_post(emulator, tmp_path):
    tag = "lease"
    rows = rows_of(6, tag)
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(TaskDeferred):  # run-1's batch is in progress (deferred)
        operator(manifest, out, deferrable=True).execute(context("run-1"))
    assert len(posts(emulator, tag)) == 4
    lease = json.loads((out / LEASE_NAME).read_text())
    assert (lease["run_id"], lease["try"]) == ("run-1", "1")

    with pytest.raises(AirflowFailException) as caught:
        operator(manifest, out).execute(context("run-2"))
    message = str(caught.value)
    assert str(out / LEASE_NAME) in message
    assert "run_id='run-1'" in message
    assert "nothing was sent" in message
    assert len(posts(emulator, tag)) == 4  # run-2 sent nothing

    # run-1's retry is the same task instance: it takes the lease over, finishes and frees it.
    summary = operator(manifest, out).execute(context("run-1", try_number=2))
    assert summary["completed"] == 6
    assert len(posts(emulator, tag)) == 6
    assert not (out / LEASE_NAME).exists()
    # Now run-2 may write there: every video is there from the same request, nothing is paid.
    again = operator(manifest, out).execute(context("run-2"))
    assert (again["posts"], again["reused"]) == (0, 6)
    assert len(posts(emulator, tag)) == 6


def test_a_stale_lease_is_taken_over(emulator, tmp_path):
    """A lease past its expiry (its run died long ago) does not block the prefix."""
    rows = rows_of(2, "stale-lease")
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    out.mkdir()
    holder = {"dag_id": "other", "task_id": "batch", "run_id": "dead", "map_index": -1, "try": "1"}
    (out / LEASE_NAME).write_text(json.dumps({**holder, "acquired": 1.0, "expires": 2.0}))
    summary = operator(manifest, out).execute(context("run-1"))
    assert summary["completed"] == 2
    assert not (out / LEASE_NAME).exists()


# ------------------------------------------------------------------------------------ validate once
def test_a_retry_does_not_check_the_file_inputs_of_an_unchanged_manifest_again(emulator, tmp_path):
    """File inputs are checked once per manifest: a retry finds the check recorded in the state.

    Here k0's image is replaced after k0 was paid for: checking it again would fail the retry (and
    every later one) over a row that needs its image no more.
    """
    image = tmp_path / "k0.png"
    image.write_bytes(PNG)
    rows = rows_of(2, "checked-once")
    rows[0]["image_url"] = str(image)
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(TaskDeferred):
        operator(manifest, out, deferrable=True).execute(context())
    assert len(posts(emulator, "checked-once")) == 2
    image.write_bytes(b"not an image any more")

    summary = operator(manifest, out).execute(context(try_number=2))
    assert (summary["completed"], summary["posts"]) == (2, 0)

    # A changed manifest is checked again: its bad file input is reported, nothing is sent.
    rows.append({**rows[0], "key": "k9", "prompt": "checked-once 9"})
    write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(AirflowFailException, match="neither a PNG nor a JPEG"):
        operator(manifest, out).execute(context(try_number=3))
    assert len(posts(emulator, "checked-once")) == 2
