"""A batch's durable state and its guard against a second writer.

- the row statuses and the batch's state, one small record per row, in ``task_state_store``
  (Airflow 3.3+) or in state objects under the output prefix (Airflow 2.11, or with no store)
  (:class:`BatchState`), each object replaced whole or not at all (:func:`write_atomic`);
- the lease that keeps two runs from writing (and paying for) the same output prefix at once
  (:class:`BatchLease`).

A row's record is written right after its paid POST answers, before anything else happens, so a
crash, a retry or a clear reconnects to the generation instead of paying again. Loaded only when a
batch task runs (never at DAG parse).
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from typing import Any

from airflow_provider_kling.batch.manifest import open_path
from airflow_provider_kling.exceptions import KlingConfigError
from airflow_provider_kling.utils.storage import durable_sibling, write_atomic
from airflow_provider_kling.utils.storage import fsync_folder as _fsync_folder

#: task_state_store key of the batch's meta record; row records live under ``kling_batch/<shard>``.
STATE_KEY = "kling_batch"
#: Rows per state shard (one shard is rewritten after each POST: small shards keep that cheap).
ROWS_PER_SHARD = 64
#: The lease file under the output prefix: the run writing there now (see :class:`BatchLease`).
LEASE_NAME = ".kling-batch.lease"
#: A lease outlives its batch's deadline by this much (the last downloads and the results manifest).
LEASE_GRACE = 600.0

# Row statuses in the state.
SENDING = "sending"  # its POST is about to be sent or in flight (recorded before the POST)
SUBMITTED = "submitted"  # paid for, pending at the service
COMPLETED = "completed"  # finished at the service, not yet stored
DONE = "done"  # stored under the output prefix
REUSED = "reused"  # the output prefix already held it (skip_existing): nothing paid
FAILED = "failed"  # the service failed it, or it could not be sent
UNKNOWN = "unknown"  # the POST failed in a way that may have created (and billed) a generation
FINAL = (DONE, REUSED, FAILED, UNKNOWN)


class KlingBatchStateError(KlingConfigError):
    """The batch's state or lease forbids sending anything: no retry can fix it, a person must look."""


def _identity(context: Any) -> dict[str, Any]:
    """The task instance a batch belongs to: its retries and resumptions share it, other runs do not."""
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "map_index": getattr(ti, "map_index", -1),
    }


class BatchState:
    """The batch's durable record: a meta dict and one small record per row, in shards.

    Backed by ``task_state_store`` when the context has one (Airflow 3.3+), else by JSON objects under
    ``<output_prefix>/.kling-batch/<dag>.<task>.<run>.<map_index>/`` (Airflow 2.11). A shard is
    rewritten whenever one of its rows changes; only changed shards are written, each replaced whole
    (:func:`write_atomic`), and rows are indexed by shard so a write costs only its shard's rows.

    The meta record is read at construction; the row records by :meth:`load`. A record that cannot be
    read fails the batch closed (:class:`KlingBatchStateError`): it may hold ids already paid for.
    """

    def __init__(self, context: Any, output_prefix: Any, keys: list[str] | None = None) -> None:
        self.store = context.get("task_state_store")
        self.folder: Any = None
        if self.store is None:
            from airflow_provider_kling.utils.storage import safe_file_name

            ident = _identity(context)
            parts = (ident["dag_id"], ident["task_id"], ident["run_id"], ident["map_index"])
            name = safe_file_name(".".join(str(part) for part in parts))
            self.folder = open_path(output_prefix) / ".kling-batch" / name
        self.meta: dict[str, Any] = self._get(STATE_KEY) or {}
        self.rows: dict[str, dict[str, Any]] = {}
        self._by_shard: dict[int, dict[str, dict[str, Any]]] = {}
        self._index: dict[str, int] = {}
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        #: Row records serialised by state writes (what a write costs: its shard, never the batch).
        self.rows_written = 0
        #: Bytes handed to the store or written to state objects, and how many writes.
        self.bytes_written = 0
        self.writes = 0
        #: Stamped on every record written with a ``spec``: the manifest version that spec belongs to,
        #: so a resumption of an unchanged manifest trusts the spec without building the row again.
        self.stamp: str | None = None
        if keys is not None:
            self.load(keys)

    def load(self, keys: list[str]) -> None:
        """Read every row record (the manifest's keys, in order, fix each row's shard)."""
        # Rows are sharded by their position: rows submitted together share a shard, so recording a
        # group of answers is one write. Shards written by an earlier try are all read back (a
        # reordered manifest moves rows between shards: the newest record of a row wins).
        shards = max(1, math.ceil(len(keys) / ROWS_PER_SHARD))
        stored = int(self.meta.get("shards") or 0)
        self.meta["shards"] = max(shards, stored)
        self._index = {key: i for i, key in enumerate(keys)}
        self.rows = {}
        self._by_shard = {}
        for shard in range(max(shards, stored)):
            for key, record in (self._get(f"{STATE_KEY}/{shard}") or {}).items():
                known = self.rows.get(key)
                if known is None or float(record.get("at") or 0) >= float(known.get("at") or 0):
                    self.rows[key] = record
        for key, record in self.rows.items():
            self._by_shard.setdefault(self.shard_of(key), {})[key] = record

    @property
    def where(self) -> str:
        return "task_state_store" if self.store is not None else str(self.folder)

    def _path(self, key: str) -> Any:
        return self.folder / f"{key.replace('/', '-')}.json"

    def _get(self, key: str) -> Any:
        if self.store is not None:
            value = self.store.get(key)
            if isinstance(value, str):  # a store that keeps text
                value = self._decode(value.encode(), f"task_state_store key {key!r}")
            if value is not None and not isinstance(value, dict):
                raise self._unreadable(f"task_state_store key {key!r}", f"holds a {type(value).__name__}")
            return value
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        return self._decode(data, str(path))

    def _decode(self, data: bytes, where: str) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise self._unreadable(where, f"is not valid JSON ({len(data)} bytes: {exc})") from None
        if not isinstance(value, dict):
            raise self._unreadable(where, f"holds a {type(value).__name__}, not the batch's JSON object")
        return value

    @staticmethod
    def _unreadable(where: str, why: str) -> KlingBatchStateError:
        return KlingBatchStateError(
            f"The batch state {where} cannot be read: it {why}. It records the generations this batch "
            "has already paid for, so nothing was sent. Inspect it and restore it (from a backup or an "
            "earlier version of the object), then clear the task; or, after checking the service's "
            "dashboard for the ids it held, delete it to start its rows over (they are paid again)."
        )

    def _set(self, key: str, value: Any) -> None:
        data = json.dumps(value, separators=(",", ":")).encode()
        self.writes += 1
        self.bytes_written += len(data)
        if self.store is not None:
            self.store.set(key, value)
            return
        write_atomic(self._path(key), data)

    def shard_of(self, key: str) -> int:
        index = self._index.get(key)
        if index is None:
            return zlib.crc32(key.encode()) % int(self.meta["shards"])
        return index // ROWS_PER_SHARD

    def _record(self, key: str) -> dict[str, Any]:
        """The row's record, created (and indexed under its shard) when missing."""
        record = self.rows.get(key)
        if record is None:
            record = self.rows[key] = {}
            self._by_shard.setdefault(self.shard_of(key), {})[key] = record
        return record

    def update(self, key: str, **values: Any) -> dict[str, Any]:
        with self._lock:
            record = self._record(key)
            record.update(values, at=time.time())
            self._stamp(record, values)
            self._dirty.add(self.shard_of(key))
            return record

    def _stamp(self, record: dict[str, Any], values: dict[str, Any]) -> None:
        if "spec" in values:
            if self.stamp is None:
                record.pop("m", None)
            else:
                record["m"] = self.stamp

    def forget(self, key: str) -> None:
        """Drop a row's record (its POST surely created nothing): the row is to be sent again."""
        with self._lock:
            if self.rows.pop(key, None) is not None:
                shard = self.shard_of(key)
                self._by_shard.get(shard, {}).pop(key, None)
                self._dirty.add(shard)

    def settle_interrupted(self, *, resend: bool) -> list[str]:
        """Settle rows marked as being sent when the last process stopped (a killed worker).

        Their POST may have created, and billed, a generation whose id never came back: they become
        ``unknown`` and are never sent again, unless the user asked for it (``resend_unknown``) at the
        start of a try, when they (and earlier ``unknown`` rows) are forgotten, to be sent again.

        :param resend: forget such rows so they are sent again.
        :return: the keys forgotten to be sent again.
        """
        again = []
        for key, record in list(self.rows.items()):
            status = record.get("st")
            if resend and status in (SENDING, UNKNOWN):
                again.append(key)
                self.forget(key)
            elif status == SENDING:
                self.update(
                    key,
                    st=UNKNOWN,
                    error=(
                        "the worker stopped while this row's POST was in flight: it may have created "
                        "(and billed) a generation whose id never came back; not sent again "
                        "(a clear with resend_unknown=True sends it again)"
                    ),
                )
        return again

    def save_rows(self, updates: dict[str, dict[str, Any]]) -> None:
        """Update rows and write their shards now (right after paid POSTs answered): one write per shard."""
        with self._lock:
            shards = set()
            for key, values in updates.items():
                record = self._record(key)
                record.update(values, at=time.time())
                self._stamp(record, values)
                shards.add(self.shard_of(key))
            for shard in sorted(shards):
                self._dirty.discard(shard)
                self._write_shard(shard)

    def _write_shard(self, shard: int) -> None:
        records = dict(self._by_shard.get(shard, {}))
        self.rows_written += len(records)
        self._set(f"{STATE_KEY}/{shard}", records)

    def flush(self) -> None:
        """Write the meta record and every changed shard."""
        with self._lock:
            for shard in sorted(self._dirty):
                self._write_shard(shard)
            self._dirty.clear()
            self._set(STATE_KEY, self.meta)


class BatchLease:
    """``<output_prefix>/.kling-batch.lease``: which task instance writes (and pays for) the prefix now.

    Two runs writing the same prefix at once would each pay for every row and overwrite each other's
    videos, so a batch takes the lease before it sends anything. A lease names its holder's
    dag_id/task_id/run_id/map_index (retries, clears and resumptions of that task instance take it
    over), the try, host and process, when it was taken and when it expires: the holder's deadline
    (``timeout`` after its try started) plus :data:`LEASE_GRACE`. An expired lease is stale and taken
    over. The lease is deleted when the batch ends (results written) or fails with an error no retry
    can fix; a run that died or ran out of retries keeps it until it expires.

    On a local disk the lease is created with an atomic link (two runs cannot both create it); on
    object storage it is written and read back, which leaves a window of one round trip.

    :param prefix: the output prefix (a Path or ObjectStoragePath).
    :param context: the task's context (its task instance is the holder).
    """

    def __init__(self, prefix: Any, context: Any) -> None:
        self.path = prefix / LEASE_NAME
        self.holder = _identity(context)
        self.try_number = str(getattr(context["ti"], "try_number", 1))

    def read(self) -> dict[str, Any] | None:
        """The lease as stored, or None when there is none."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            # Leases are written whole, so this is not a half-written lease of ours: fail closed.
            raise KlingBatchStateError(
                f"The batch lease {self.path} cannot be read, so another run may be writing this output "
                "prefix; nothing was sent. Delete the lease if no other batch writes there."
            )
        return value

    def ours(self, lease: dict[str, Any] | None) -> bool:
        return lease is not None and all(lease.get(k) == v for k, v in self.holder.items())

    def acquire(self, expires: float) -> None:
        """Take the lease (or renew ours) until ``expires``; refuse when another run holds a live one."""
        current = self.read()
        now = time.time()
        if current is not None and not self.ours(current) and float(current.get("expires") or 0) > now:
            raise self._refused(current)
        if (
            self.ours(current)
            and current is not None
            and current.get("try") == self.try_number
            and float(current.get("expires") or 0) >= expires
        ):
            return  # ours already, for this try: a resumption writes nothing
        lease = {
            **self.holder,
            "try": self.try_number,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,
            "acquired": now,
            "expires": expires,
        }
        data = json.dumps(lease, separators=(",", ":")).encode()
        if current is None and not hasattr(self.path, "fs"):
            if not _link_new(self.path, data):  # another run created it meanwhile
                raise self._refused(self.read() or {})
        else:
            write_atomic(self.path, data)
        stored = self.read()
        if stored is None or stored.get("token") != lease["token"]:
            raise self._refused(stored or {})

    def release(self) -> None:
        """Delete the lease when it is still ours (a run that took over a stale one keeps it)."""
        try:
            if self.ours(self.read()):
                self.path.unlink()
        except (FileNotFoundError, KlingBatchStateError):
            pass

    def _refused(self, lease: dict[str, Any]) -> KlingBatchStateError:
        holder = ", ".join(f"{k}={lease.get(k)!r}" for k in ("dag_id", "task_id", "run_id", "map_index"))

        def when(at: Any) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(at or 0)))

        return KlingBatchStateError(
            f"Another batch writes this output prefix: the lease {self.path} is held by {holder} (try "
            f"{lease.get('try')}, host {lease.get('host')}, since {when(lease.get('acquired'))}, until "
            f"{when(lease.get('expires'))}). Two batches on one prefix would each pay for every row; "
            "nothing was sent. Wait for that run to end, give this run another output_prefix, or delete "
            "the lease if that run is no longer running."
        )


def write_jsonl(path: Any, lines: Iterable[dict[str, Any]]) -> None:
    """Write JSON Lines to a local path or object storage, whole or not at all (:func:`write_atomic`)."""
    body = "".join(json.dumps(line, separators=(",", ":"), default=str) + "\n" for line in lines)
    write_atomic(path, body.encode())


def _link_new(path: Any, data: bytes) -> bool:
    """Create local file ``path`` holding ``data``, whole, only if it does not exist (False if it does)."""
    temporary = durable_sibling(path, data)
    try:
        os.link(temporary, path)  # atomic, and fails when the name exists
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return True
