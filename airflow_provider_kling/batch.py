"""Catalog-scale batches for :class:`~airflow_provider_kling.operators.kling.KlingBatchVideoOperator`.

Loaded only when a batch task runs (never at DAG parse). What lives here:

- reading a manifest (JSONL or CSV in object storage or a local file, or a list of dicts from XCom)
  and validating every row before anything is paid (:func:`read_manifest`, :func:`validate_rows`);
- the batch's durable state, one small record per row, in ``task_state_store`` (Airflow 3.3+) or in
  state objects under the output prefix (Airflow 2.11, or with no store) (:class:`BatchState`), each
  object replaced whole or not at all (:func:`write_atomic`);
- the lease that keeps two runs from writing (and paying for) the same output prefix at once
  (:class:`BatchLease`);
- one run of the batch loop in the worker: reconcile what the trigger reported, download finished
  videos (bounded concurrency), submit new rows up to ``max_active`` in flight, then defer again or
  write the results manifest (:class:`BatchRun`).

A row's record is written right after its paid POST answers, before anything else happens, so a
crash, a retry or a clear reconnects to the generation instead of paying again.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import os
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.exceptions import KlingConfigError, KlingValidationError

if TYPE_CHECKING:
    from airflow_provider_kling.models import KlingRequest

#: task_state_store key of the batch's meta record; row records live under ``kling_batch/<shard>``.
STATE_KEY = "kling_batch"
#: Rows per state shard (one shard is rewritten after each POST: small shards keep that cheap).
ROWS_PER_SHARD = 64
#: Row keys become file names: letters, digits, ``.``, ``_`` and ``-``, at most 128 characters.
KEY_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Catalog field types whose CSV cells are text (every other type is decoded as JSON when it parses).
_TEXT_TYPES = ("text", "image", "audio", "video", "choice")
#: The lease file under the output prefix: the run writing there now (see :class:`BatchLease`).
LEASE_NAME = ".kling-batch.lease"
#: A lease outlives its batch's deadline by this much (the last downloads and the results manifest).
LEASE_GRACE = 600.0
#: Most bad rows named in the exception (every one is logged).
_REPORT_ROWS = 25

# Row statuses in the state.
SENDING = "sending"  # its POST is about to be sent or in flight (recorded before the POST)
SUBMITTED = "submitted"  # paid for, pending at the service
COMPLETED = "completed"  # finished at the service, not yet stored
DONE = "done"  # stored under the output prefix
REUSED = "reused"  # the output prefix already held it (skip_existing): nothing paid
FAILED = "failed"  # the service failed it, or it could not be sent
UNKNOWN = "unknown"  # the POST failed in a way that may have created (and billed) a generation
FINAL = (DONE, REUSED, FAILED, UNKNOWN)


# ------------------------------------------------------------------------------------ manifest
def read_manifest(source: Any, key_field: str = "key") -> list[dict[str, Any]]:
    """The rows of a manifest: a list of dicts (XCom), or a JSONL / CSV file (local or object storage).

    A file whose name ends in ``.csv`` is read as CSV with a header row (empty cells are left out);
    only the cells of columns whose catalog type is a number, a flag or a structure (``duration``,
    ``cfg_scale``, ``generate_audio``, ``camera_control``...) are decoded as JSON; every other column,
    the row key among them, stays text as written (``007``, ``12.50``, ``true``). Anything else is
    read as JSON Lines (one object per line, blank lines skipped).

    :param source: a path, URL, ObjectStoragePath, JSON list text, or a list of dicts.
    :param key_field: the column holding the row key (never decoded).
    """
    if isinstance(source, (list, tuple)):
        rows = list(source)
        bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
        if bad:
            raise KlingValidationError([(f"manifest[{i}]", "must be a mapping of fields") for i in bad[:10]])
        return [dict(r) for r in rows]
    if isinstance(source, str) and source.lstrip().startswith("["):
        return read_manifest(json.loads(source), key_field)
    path = open_path(source)
    try:
        with path.open("rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise KlingValidationError([("manifest", f"{source} does not exist")]) from None
    text = data.decode("utf-8-sig")
    if str(source).lower().endswith(".csv"):
        return [_csv_row(row, key_field) for row in csv.DictReader(io.StringIO(text))]
    rows = []
    errors = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            errors.append((f"manifest line {number}", f"is not JSON: {exc}"))
            continue
        if not isinstance(row, dict):
            errors.append((f"manifest line {number}", "must be a JSON object"))
            continue
        rows.append(row)
    if errors:
        raise KlingValidationError(errors)
    return rows


@functools.cache
def _decoded_columns() -> frozenset[str]:
    """Fields whose type, for some model of the catalog, is a number, a flag or a structure."""
    from airflow_provider_kling import catalog

    names = set()
    for model_id in catalog.MODELS:
        for name in catalog.model_fields(model_id):
            if name.endswith("_url") or name not in catalog.FIELDS:
                continue  # URLs and anything the catalog does not know stay text
            if catalog.field_spec(model_id, name).get("type") not in _TEXT_TYPES:
                names.add(name)
    return frozenset(names)


def _csv_row(row: dict[str, Any], key_field: str = "key") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cell in row.items():
        if name is None or cell is None or cell == "":
            continue
        name = name.strip()
        value: Any = cell
        # Keys, ids and free text stay as written: "12.50" is not 12.5, "1e3" is not 1000.0.
        if name != key_field and name in _decoded_columns():
            try:
                value = json.loads(cell)
            except ValueError:
                value = cell
            if isinstance(value, str) or value is None:
                value = cell
        out[name] = value
    return out


def open_path(location: Any) -> Any:
    """A local Path or an ObjectStoragePath for ``location`` (a path, a URL, or either object)."""
    from pathlib import Path

    if hasattr(location, "fs") or isinstance(location, Path):
        return location
    text = str(location)
    if "://" in text and not text.startswith("file://"):
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(text)
    return Path(text.removeprefix("file://")).expanduser()


@dataclass
class Row:
    """One validated manifest row.

    :param index: its position in the manifest (0-based).
    :param key: the row key (the video is ``<output_prefix>/<key>.mp4``).
    :param request: the validated request (file inputs not yet read or signed).
    :param spec: a hash of the row as written (no I/O): a changed row is a new generation.
    """

    index: int
    key: str
    request: KlingRequest
    spec: str

    @property
    def model(self) -> str:
        return self.request.model


def validate_rows(
    rows: list[dict[str, Any]],
    *,
    model: str,
    parameters: dict[str, Any] | None,
    key_field: str,
    check_capabilities: bool,
    probe_files: bool = True,
) -> list[Row]:
    """Validate every row against the catalog before anything is paid.

    Each row is ``parameters`` with the row's own fields on top (``model`` too); ``key_field`` names
    the row key (default: the row's position, ``row-00000``). File inputs are checked too (they exist,
    within the model's size limit, PNG or JPEG by their first bytes) without being downloaded.

    :raises KlingValidationError: one report naming every bad row and field; nothing was sent.
    """
    from airflow_provider_kling.models import build_request

    errors: list[tuple[str, str]] = []
    out: list[Row] = []
    seen: dict[str, int] = {}
    if not rows:
        raise KlingValidationError([("manifest", "holds no rows")])
    for index, raw in enumerate(rows):
        fields = {**(parameters or {}), **{k: v for k, v in raw.items() if k != key_field}}
        fields.setdefault("model", model)
        key_value = raw.get(key_field, f"row-{index:05d}")
        key = str(key_value).strip()
        where = f"row {index} ({key_field} {key!r})" if key_field in raw else f"row {index}"
        if not KEY_RULE.match(key) or key.endswith(".kling.json"):
            errors.append(
                (
                    where,
                    f"{key_field} must be 1-128 letters, digits, '.', '_' or '-' (it names the video file)",
                )
            )
        elif key in seen:
            errors.append((where, f"{key_field} {key!r} is also the key of row {seen[key]}"))
        else:
            seen[key] = index
        try:
            request = build_request(fields, check_capabilities=check_capabilities)
        except KlingValidationError as exc:
            errors.extend((f"{where} {name}", message) for name, message in exc.errors)
            continue
        spec = request.fingerprint()
        out.append(Row(index, key, request, spec))
    if probe_files and not errors:
        errors.extend(_probe_file_inputs(out))
    if errors:
        raise KlingValidationError(errors)
    return out


def _probe_file_inputs(rows: list[Row]) -> list[tuple[str, str]]:
    """Check every file input of every row (exists, size, PNG/JPEG) with a few threads."""
    from airflow_provider_kling import catalog
    from airflow_provider_kling.models import _image_slots, image_mime, is_file_reference, presign_image

    jobs: list[tuple[str, str, int]] = []
    for row in rows:
        for label, container, slot in _image_slots(row.request.fields):
            value = container[slot]
            if isinstance(value, str) and is_file_reference(value):
                top = label.split(".")[0]
                name = "image_url" if top in ("elements", "image_list") else top
                name = "static_mask" if top == "dynamic_masks" else name
                limit = catalog.field_spec(row.model, name).get("max_bytes", 10 * catalog.MB)
                jobs.append((f"row {row.index} ({row.key!r}) {label}", value, limit))

    def probe(job: tuple[str, str, int]) -> tuple[str, str] | None:
        where, ref, limit = job
        try:
            if presign_image(ref, limit, 60, mask=False) is not None:
                return None
            path = open_path(ref)
            size = path.stat().st_size
            if size > limit:
                return where, f"is a file of {size} bytes; this model takes images of at most {limit} bytes"
            with path.open("rb") as handle:
                head = handle.read(16)
            if image_mime(head) is None:
                return where, f"names {ref!r}, which is neither a PNG nor a JPEG image (by its first bytes)"
        except FileNotFoundError:
            return where, f"names {ref!r}, which does not exist"
        except ValueError as exc:
            return where, str(exc)
        except Exception as exc:
            return where, f"names {ref!r}, which could not be read: {type(exc).__name__}: {exc}"
        return None

    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        return [found for found in pool.map(probe, jobs) if found is not None]


def validation_report(exc: KlingValidationError, total: int) -> str:
    """The message that fails a batch whose rows did not validate: every bad row, up to a cap."""
    errors = list(exc.errors)
    rows = {name.split(" ", 2)[1] for name, _ in errors if name.startswith("row ")}
    lines = [f"  {name}: {message}" for name, message in errors[:_REPORT_ROWS]]
    more = len(errors) - _REPORT_ROWS
    tail = f"\n  ... and {more} more problem(s), each in the log above" if more > 0 else ""
    return (
        f"{len(rows) or len(errors)} of {total} manifest rows are not valid; nothing was sent, nothing "
        "paid:\n" + "\n".join(lines) + tail
    )


# ------------------------------------------------------------------------------------ state
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
            from airflow_provider_kling.hooks.kling import safe_file_name

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
        if self.store is not None:
            self.store.set(key, value)
            return
        write_atomic(self._path(key), json.dumps(value, separators=(",", ":")).encode())

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
            self._dirty.add(self.shard_of(key))
            return record

    def forget(self, key: str) -> None:
        """Drop a row's record (its POST surely created nothing): the row is to be sent again."""
        with self._lock:
            if self.rows.pop(key, None) is not None:
                shard = self.shard_of(key)
                self._by_shard.get(shard, {}).pop(key, None)
                self._dirty.add(shard)

    def save_rows(self, updates: dict[str, dict[str, Any]]) -> None:
        """Update rows and write their shards now (right after paid POSTs answered): one write per shard."""
        with self._lock:
            shards = set()
            for key, values in updates.items():
                self._record(key).update(values, at=time.time())
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


# ------------------------------------------------------------------------------------ the run
@dataclass
class Outcome:
    """What one pass of the batch loop left to do."""

    pending: list[list[str]] = field(default_factory=list)  # [key, generation id, api] at the service
    waiting: int = 0  # rows not yet submitted
    backoff: float = 0.0  # seconds to wait before submitting again (429)


class BatchRun:
    """One execution (or resumption) of a batch task in the worker.

    :param operator: the :class:`KlingBatchVideoOperator`.
    :param context: the task's context.
    :param first_pass: the try's first pass in the worker (``execute``): every row's file inputs are
        checked up front (unless an earlier try checked this same manifest with the same settings) and,
        with ``resend_unknown``, rows left ``unknown`` are sent again. Resumptions after a deferral do
        neither.
    """

    def __init__(self, operator: Any, context: Any, *, first_pass: bool = True) -> None:
        self.op = operator
        self.context = context
        self.log = operator.log
        self.hook = operator.hook
        self.prefix = open_path(_folder(operator.output_prefix))
        self.api = self.hook.endpoint.api
        rows = read_manifest(operator.manifest, operator.key_field)
        # The manifest and the settings its rows were checked with: a try that finds them unchanged
        # in the state does not check every file input again.
        settings = [operator.model, operator.parameters, operator.key_field, operator.check_capabilities]
        checked = hashlib.sha256(
            json.dumps([settings, rows], sort_keys=True, separators=(",", ":"), default=str).encode()
        ).hexdigest()
        # The meta record first: one that cannot be read stops the batch before anything is sent.
        self.state = BatchState(context, self.prefix)
        meta = self.state.meta
        probe = first_pass and meta.get("validated") != checked
        if first_pass and not probe:
            self.log.info("The manifest's file inputs were checked by an earlier try: not checked again")
        try:
            self.rows = validate_rows(
                rows,
                model=operator.model,
                parameters=operator.parameters,
                key_field=operator.key_field,
                check_capabilities=operator.check_capabilities,
                probe_files=probe,
            )
        except KlingValidationError as exc:
            for name, message in exc.errors:
                self.log.error("Manifest: %s: %s", name, message)
            raise KlingValidationError([("manifest", validation_report(exc, len(rows)))]) from None
        if probe:
            meta["validated"] = checked
        self.by_key = {row.key: row for row in self.rows}
        self.state.load([row.key for row in self.rows])
        try_number = str(getattr(context["ti"], "try_number", 1))
        # Rows marked as being sent when the last process stopped (a killed worker): their POST may
        # have created, and billed, a generation whose id never came back. Reported as unknown and
        # never sent again, unless the user asked for it (resend_unknown) and a try starts.
        resend = bool(operator.resend_unknown) and first_pass
        again = []
        for key, record in list(self.state.rows.items()):
            status = record.get("st")
            if resend and status in (SENDING, UNKNOWN):
                again.append(key)
                self.state.forget(key)
            elif status == SENDING:
                self.state.update(
                    key,
                    st=UNKNOWN,
                    error=(
                        "the worker stopped while this row's POST was in flight: it may have created "
                        "(and billed) a generation whose id never came back; not sent again "
                        "(a clear with resend_unknown=True sends it again)"
                    ),
                )
        if again:
            self.log.warning(
                "resend_unknown: sending %s row(s) again whose earlier POST may have created a generation "
                "whose id never came back; each of them may be paid twice: %s",
                len(again),
                ", ".join(again[:20]) + (" ..." if len(again) > 20 else ""),
            )
        if meta.get("try") != try_number:
            # A new try (a retry or a clear): rows that failed get another chance; rows whose POST may
            # have created a generation (UNKNOWN) are kept, unless resend_unknown (above).
            for key in [k for k, r in self.state.rows.items() if r.get("st") == FAILED]:
                self.state.forget(key)
            meta["try"] = try_number
            meta["posts"] = 0
            meta["reused"] = 0
            meta["started"] = time.time()
        if not meta.get("deadline") or meta.get("deadline_try") != try_number:
            meta["deadline"] = time.time() + operator.timeout_seconds
            meta["deadline_try"] = try_number
        # Before anything is sent: no other run may be writing (and paying for) this prefix.
        self.lease = BatchLease(self.prefix, context)
        self.lease.acquire(float(meta["deadline"]) + LEASE_GRACE)
        # The window: max_active, narrowed by a 429 to what is in flight, widened again after.
        self._ceiling = max(1, int(operator.max_active))
        self._limit = self._ceiling
        self._retry_after = 5.0

    # -------------------------------------------------------------- helpers
    def video_path(self, key: str) -> Any:
        return self.prefix / f"{key}.mp4"

    def _record(self, key: str) -> dict[str, Any] | None:
        """The row's state record, when it belongs to the row as it is written now."""
        record = self.state.rows.get(key)
        if record is None or record.get("spec") != self.by_key[key].spec:
            return None
        return record

    def in_flight(self) -> list[list[str]]:
        out = []
        for row in self.rows:
            record = self._record(row.key)
            if record is not None and record.get("st") == SUBMITTED:
                out.append([row.key, record["id"], record.get("api") or self.api])
        return out

    def unsubmitted(self) -> list[Row]:
        return [row for row in self.rows if self._record(row.key) is None]

    # -------------------------------------------------------------- one pass
    def step(self, finished: dict[str, Any] | None = None) -> Outcome:
        """Apply what the trigger reported, submit up to the limit, store finished videos."""
        if finished:
            self._apply_finished(finished)
        # Refill the service's window first, then store what finished while the new ones run.
        backoff = self._submit()
        self._store_completed()
        self.state.flush()
        return Outcome(pending=self.in_flight(), waiting=len(self.unsubmitted()), backoff=backoff)

    def _apply_finished(self, finished: dict[str, Any]) -> None:
        for key, verdict in finished.items():
            record = self._record(key) if key in self.by_key else None
            if record is None or record.get("st") != SUBMITTED:
                continue
            status, message = [*verdict, None][:2] if isinstance(verdict, list) else (verdict, None)
            if status == "completed":
                self.state.update(key, st=COMPLETED)
            else:
                self.state.update(key, st=FAILED, error=str(message or "the service ended it in error"))

    def poll_in_flight(self) -> None:
        """Poll every in-flight generation once from the worker (non-deferrable mode)."""
        from airflow_provider_kling.exceptions import KlingError
        from airflow_provider_kling.models import GenerationStatus

        pending = self.in_flight()

        def poll(item: list[str]) -> tuple[str, Any]:
            key, gid, api = item
            try:
                return key, self.hook.get_generation(gid, api=api, deadline=self.state.meta["deadline"])
            except KlingError as exc:
                return key, exc

        finished: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(pending)))) as pool:
            for key, answer in pool.map(poll, pending):
                if isinstance(answer, Exception):
                    if not getattr(answer, "retryable", True):
                        finished[key] = ["failed", str(answer)]
                    continue
                if answer.status is GenerationStatus.COMPLETED:
                    finished[key] = ["completed", None]
                elif answer.status is GenerationStatus.FAILED:
                    finished[key] = ["failed", answer.error or answer.raw_status]
        self._apply_finished(finished)

    def _store_completed(self) -> None:
        """Download every completed generation to ``<prefix>/<key>.mp4`` with its sidecar."""
        from airflow_provider_kling.exceptions import KlingError
        from airflow_provider_kling.utils.artifacts import download

        todo = [
            row.key
            for row in self.rows
            if (record := self._record(row.key)) is not None and record.get("st") == COMPLETED
        ]
        if not todo:
            return

        def store(key: str) -> tuple[str, dict[str, Any]]:
            record = dict(self.state.rows[key])
            try:
                generation = self.hook.get_generation(record["id"], api=record.get("api"))
                if not generation.video_url:
                    raise KlingError(f"generation {generation.id} is completed but has no video URL yet")
                sidecar = {
                    "model": self.by_key[key].model,
                    "request": record.get("request"),
                    "api": record.get("api"),
                    "base_url": self.hook.endpoint.base_url,
                    "row_key": key,
                }
                path = download(self.hook, generation, self.video_path(key), True, sidecar=sidecar)
                size = generation.file_size
                if size is None:
                    size = open_path(path).stat().st_size
                usage = {**(record.get("usage") or {}), **generation.usage}
                return key, {"st": DONE, "video": str(path), "size": size, "usage": usage, "error": None}
            except Exception as exc:
                # Kept as completed: a later pass or a retry of the task downloads it, paying nothing.
                return key, {"error": f"download failed: {type(exc).__name__}: {exc}"}

        with ThreadPoolExecutor(max_workers=max(1, min(self.op.download_concurrency, len(todo)))) as pool:
            for key, values in pool.map(store, todo):
                self.state.update(key, **values)
        failed = sum(1 for key in todo if self.state.rows[key].get("st") == COMPLETED)
        self.log.info(
            "Stored %s finished video(s) under %s%s",
            len(todo) - failed,
            self.prefix,
            f"; {failed} download(s) failed and will be tried again" if failed else "",
        )

    def _reuse(self, row: Row, fingerprint: str) -> dict[str, Any] | None:
        """The video already under the prefix for this row, when made from the same request."""
        from airflow_provider_kling.utils.artifacts import read_sidecar, sidecar_reusable

        video = self.video_path(row.key)
        record = read_sidecar(video)
        base_url = self.hook.endpoint.base_url
        if record is None or not sidecar_reusable(record, fingerprint, base_url, video=video, log=self.log):
            return None
        try:
            size = video.stat().st_size
        except Exception:
            return None
        if size != record.get("file_size"):
            return None
        usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
        return {
            "st": REUSED,
            "id": record.get("generation_id"),
            "video": str(video),
            "size": size,
            "usage": usage,
            "request": fingerprint,
            "error": None,
        }

    def _submit(self) -> float:
        """Submit rows until ``max_active`` generations are in flight; return a backoff after a 429."""
        from airflow_provider_kling.models import resolve_file_inputs

        waiting = self.unsubmitted()
        free = self._limit - len(self.in_flight())
        if not waiting or free <= 0:
            return 0.0
        backoff = 0.0
        stop = threading.Event()
        meta = self.state.meta

        def prepare(row: Row) -> tuple[Row, Any, str | None, dict[str, Any] | None]:
            """Resolve inputs, check skip_existing, POST: (row, generation or error, hash, reuse)."""
            if stop.is_set():
                return row, None, None, None
            try:
                request = resolve_file_inputs(
                    row.request, presign=self.op.presign_inputs, presign_seconds=self.op.presign_seconds
                )
            except KlingValidationError as exc:
                return row, exc, None, None
            fingerprint = request.fingerprint()
            if self.op.skip_existing:
                found = self._reuse(row, fingerprint)
                if found is not None:
                    return row, None, fingerprint, found
            if stop.is_set():
                return row, None, None, None
            try:
                return row, self.hook.submit(request), fingerprint, None
            except Exception as exc:
                return row, exc, fingerprint, None

        submitted = reused = failed = 0
        # Rows answered by reuse do not take a slot: keep feeding until the slots are full.
        queue = iter(waiting)
        active = 0
        threads = max(1, min(self.op.submit_concurrency, free))
        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures: set[Any] = set()

            def feed(paid: dict[str, dict[str, Any]]) -> None:
                """Record what was paid and the rows about to be sent (one write), then send them."""
                batch: list[Row] = []
                # Only as many rows as there are threads are queued (and marked) at a time.
                while (
                    active + len(futures) + len(batch) < free
                    and len(futures) + len(batch) < threads
                    and not stop.is_set()
                ):
                    row = next(queue, None)
                    if row is None:
                        break
                    batch.append(row)
                # A row is marked as being sent before its POST: a worker killed while POSTs are in
                # flight leaves those rows marked, and they are never sent again (see UNKNOWN).
                intents = {row.key: {"spec": row.spec, "st": SENDING, "error": None} for row in batch}
                if paid or intents:
                    self.state.save_rows({**paid, **intents})
                for row in batch:
                    futures.add(pool.submit(prepare, row))

            feed({})
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                futures.difference_update(finished)
                paid: dict[str, dict[str, Any]] = {}
                for done in finished:
                    row, answer, fingerprint, found = done.result()
                    outcome = self._one_answer(row, answer, fingerprint, found, paid, stop)
                    if outcome == "submitted":
                        submitted += 1
                        active += 1
                    elif outcome == "reused":
                        reused += 1
                    elif outcome == "failed":
                        failed += 1
                    elif outcome == "slow_down":
                        self._limit = max(1, len(self.in_flight()) + active)
                        backoff = max(backoff, self._retry_after)
                # The paid ids are recorded before anything else: a crash after this pays nothing twice.
                feed(paid)
        if submitted and not backoff and self._limit < self._ceiling:
            # A round the service took without a 429: widen the window by what it took.
            self._limit = min(self._ceiling, self._limit + submitted)
        meta["posts"] = int(meta.get("posts") or 0) + submitted
        meta["reused"] = int(meta.get("reused") or 0) + reused
        if submitted or reused or failed:
            from airflow_provider_kling import metrics

            if submitted:
                metrics.incr(metrics.SUBMITTED, self.op.model, count=submitted)
            if reused:
                metrics.incr(metrics.REUSED, self.op.model, count=reused)
            self.log.info(
                "Submitted %s generation(s), reused %s existing video(s), %s row(s) failed to send; "
                "%s in flight, %s rows still to submit%s",
                submitted,
                reused,
                failed,
                len(self.in_flight()),
                len(self.unsubmitted()),
                f"; the service asked to slow down: waiting {backoff:.0f} s" if backoff else "",
            )
        return backoff

    def _one_answer(
        self,
        row: Row,
        answer: Any,
        fingerprint: str | None,
        found: dict[str, Any] | None,
        paid: dict[str, dict[str, Any]],
        stop: threading.Event,
    ) -> str:
        """Take one row's submit outcome into the state (paid ids into ``paid``, written by the caller)."""
        from airflow_provider_kling.exceptions import KlingAuthError, KlingConfigError, KlingForbiddenError
        from airflow_provider_kling.hooks.kling import _created_nothing, post_may_have_created

        if found is not None:
            self.state.update(row.key, spec=row.spec, **found)
            return "reused"
        if answer is None:
            self.state.forget(row.key)
            return "skipped"  # not sent: a stop came first
        if not isinstance(answer, Exception):
            paid[row.key] = {
                "spec": row.spec,
                "st": SUBMITTED,
                "id": answer.id,
                "api": self.api,
                "request": fingerprint,
                "usage": dict(answer.usage),
                "error": None,
            }
            return "submitted"
        exc = answer
        if isinstance(exc, (KlingAuthError, KlingForbiddenError)) or (
            isinstance(exc, KlingConfigError) and not isinstance(exc, KlingValidationError)
        ):
            stop.set()
            raise exc
        if _created_nothing(exc):
            # The service's concurrency limit (429/503) or no connection: slow down, never fail the row.
            stop.set()
            self.state.forget(row.key)
            self._retry_after = float(getattr(exc, "retry_after", None) or 5.0)
            return "slow_down"
        if post_may_have_created(exc):
            paid[row.key] = {
                "spec": row.spec,
                "st": UNKNOWN,
                "request": fingerprint,
                "error": (
                    f"the POST failed in a way that may have created a paid generation ({exc}); not sent "
                    "again, so nothing is paid twice: check the service's dashboard (a clear with "
                    "resend_unknown=True sends it again)"
                ),
            }
            return "failed"
        self.state.update(row.key, spec=row.spec, st=FAILED, request=fingerprint, error=str(exc))
        return "failed"

    # -------------------------------------------------------------- the end
    def time_left(self) -> float:
        return float(self.state.meta["deadline"]) - time.time()

    def expire_in_flight(self, reason: str) -> None:
        for key, _gid, _api in self.in_flight():
            self.state.update(key, st=FAILED, error=reason)

    def finish(self) -> dict[str, Any]:
        """Write the results manifest next to the videos; return the small XCom summary."""
        lines = []
        counts = {DONE: 0, REUSED: 0, FAILED: 0, UNKNOWN: 0}
        credits = tokens = 0.0
        usd = 0.0
        for row in self.rows:
            record = self._record(row.key) or {}
            status = record.get("st")
            if status == COMPLETED:  # its download kept failing
                status = FAILED
            elif status == SUBMITTED:
                status = FAILED
            elif status is None or status == SENDING:
                status = FAILED
            counts[status] = counts.get(status, 0) + 1
            usage = record.get("usage") or {}
            if record.get("st") != REUSED:
                credits += float(usage.get("credits_used") or 0)
                tokens += float(usage.get("tokens_used") or 0)
                usd += float(usage.get("usd_spent") or 0)
            lines.append(
                {
                    "key": row.key,
                    "generation_id": record.get("id"),
                    "status": {DONE: "completed"}.get(status, status),
                    "model": row.model,
                    "video": record.get("video") if status in (DONE, REUSED) else None,
                    "file_size": record.get("size") if status in (DONE, REUSED) else None,
                    "usage": usage,
                    "error": record.get("error") if status in (FAILED, UNKNOWN) else None,
                }
            )
        results = self.prefix / self.op.results_name
        write_jsonl(results, lines)
        meta = self.state.meta
        usage_total = {
            k: v
            for k, v in (
                ("credits_used", int(credits)),
                ("tokens_used", int(tokens)),
                ("usd_spent", round(usd, 4)),
            )
            if v
        }
        summary = {
            "results": str(results),
            "output_prefix": str(self.prefix),
            "rows": len(self.rows),
            "completed": counts[DONE] + counts[REUSED],
            "failed": counts[FAILED] + counts[UNKNOWN],
            "unknown": counts[UNKNOWN],
            "reused": counts[REUSED],
            "posts": int(meta.get("posts") or 0),
            "usage": usage_total,
            "state": self.state.where if self.state.store is None else "task_state_store",
        }
        self.state.flush()
        self.lease.release()
        return summary


def _folder(prefix: Any) -> Any:
    """The output prefix as a folder (a trailing separator is implied)."""
    if hasattr(prefix, "fs"):
        return prefix
    return str(prefix).rstrip("/")


def write_jsonl(path: Any, lines: Iterable[dict[str, Any]]) -> None:
    """Write JSON Lines to a local path or object storage, whole or not at all (:func:`write_atomic`)."""
    body = "".join(json.dumps(line, separators=(",", ":"), default=str) + "\n" for line in lines)
    write_atomic(path, body.encode())


def write_atomic(path: Any, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole or not at all: a failed write leaves the old content.

    On a local disk: a temporary file beside it, flushed and fsynced, renamed into place (parents are
    made). On object storage (an ObjectStoragePath): one PUT of the whole body (fsspec ``pipe_file``),
    never a streamed file whose close would store what was written before an error.
    """
    if hasattr(path, "fs"):
        path.fs.pipe_file(path.path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _link_new(path: Any, data: bytes) -> bool:
    """Create local file ``path`` holding ``data``, whole, only if it does not exist (False if it does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, path)  # atomic, and fails when the name exists
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return True


def _fsync_folder(folder: Any) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
