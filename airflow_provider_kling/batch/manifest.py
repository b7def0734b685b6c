"""A batch's manifest: reading it as it streams (JSONL or CSV in object storage or a local file, or a
list of dicts from XCom) (:func:`iter_manifest`, :func:`read_manifest`), its rows (:class:`Row`), and
validating a list of rows before anything is paid (:func:`validate_rows`, :func:`validation_report`);
catalog-scale manifests are validated as they stream by :mod:`~airflow_provider_kling.batch.validation`.

Loaded only when a batch task runs (never at DAG parse).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_kling.exceptions import KlingValidationError

if TYPE_CHECKING:
    from airflow_provider_kling.schemas.request import KlingRequest

#: Row keys become file names: letters, digits, ``.``, ``_`` and ``-``, at most 128 characters.
KEY_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Catalog field types whose CSV cells are text (every other type is decoded as JSON when it parses).
_TEXT_TYPES = ("text", "image", "audio", "video", "choice")
#: Most bad rows named in the exception (every one is logged).
_REPORT_ROWS = 25


class ManifestLine(NamedTuple):
    """One line (JSONL) or record (CSV) of a manifest as it streams: its row, or why it is not one.

    :param number: its line number in the file (1-based; for CSV the header is line 1), or the
        list position + 1 for a list of dicts.
    :param row: the row's fields (None when the line is not a row).
    :param error: why the line is not a row (None when it is).
    """

    number: int
    row: dict[str, Any] | None
    error: str | None = None


class _HashingReader(io.RawIOBase):
    """A binary stream that feeds what is read through it to a digest (the content hash, in one pass)."""

    def __init__(self, handle: Any, digest: Any) -> None:
        self._handle = handle
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._handle.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        if self._digest is not None:
            self._digest.update(data)
        return count


def iter_manifest(source: Any, key_field: str = "key", *, digest: Any = None) -> Iterator[ManifestLine]:
    """Stream a manifest's rows, one at a time: the file is never read whole and no row list is built.

    A list of dicts (XCom) or JSON list text yields its items; a file whose name ends in ``.csv`` is
    read as CSV with a header row (empty cells are left out; only the cells of columns whose catalog
    type is a number, a flag or a structure are decoded as JSON, see :func:`read_manifest`); anything
    else is read as JSON Lines (one object per line, blank lines skipped).

    :param source: a path, URL, ObjectStoragePath, JSON list text, or a list of dicts.
    :param key_field: the column holding the row key (never decoded).
    :param digest: a ``hashlib`` object fed the file's bytes as they stream (a list: its rows as JSON).
    :raises KlingValidationError: the manifest does not exist.
    """
    if isinstance(source, str) and source.lstrip().startswith("["):
        source = json.loads(source)
    if isinstance(source, (list, tuple)):
        for number, row in enumerate(source, 1):
            if digest is not None:
                digest.update(json.dumps(row, sort_keys=True, default=str).encode() + b"\n")
            if isinstance(row, dict):
                yield ManifestLine(number, dict(row))
            else:
                yield ManifestLine(number, None, "must be a mapping of fields")
        return
    path = open_path(source)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise KlingValidationError([("manifest", f"{source} does not exist")]) from None
    with handle:
        buffered = io.BufferedReader(_HashingReader(handle, digest), buffer_size=1 << 16)
        if str(source).lower().endswith(".csv"):
            text = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")
            records = csv.DictReader(text)
            for record in records:
                yield ManifestLine(records.line_num, _csv_row(record, key_field))
            return
        for number, raw in enumerate(buffered, 1):
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                yield ManifestLine(number, None, f"is not JSON: {exc}")
                continue
            if not isinstance(row, dict):
                yield ManifestLine(number, None, "must be a JSON object")
                continue
            yield ManifestLine(number, row)


def read_manifest(source: Any, key_field: str = "key") -> list[dict[str, Any]]:
    """The rows of a manifest as a list: a list of dicts (XCom), or a JSONL / CSV file.

    A file whose name ends in ``.csv`` is read as CSV with a header row (empty cells are left out);
    only the cells of columns whose catalog type is a number, a flag or a structure (``duration``,
    ``cfg_scale``, ``generate_audio``, ``camera_control``...) are decoded as JSON, and so is a ``*_url``
    cell holding an upstream Kling task's result (a JSON object with its ``generation_id``); every
    other column, the row key among them, stays text as written (``007``, ``12.50``, ``true``).
    Anything else is read as JSON Lines (one object per line, blank lines skipped). For large
    manifests use :func:`iter_manifest` and :func:`validate_manifest`, which stream.

    :param source: a path, URL, ObjectStoragePath, JSON list text, or a list of dicts.
    :param key_field: the column holding the row key (never decoded).
    """
    rows = []
    errors = []
    listed = isinstance(source, (list, tuple)) or (
        isinstance(source, str) and source.lstrip().startswith("[")
    )
    for line in iter_manifest(source, key_field):
        if line.error is not None:
            where = f"manifest[{line.number - 1}]" if listed else f"manifest line {line.number}"
            errors.append((where, line.error))
        elif line.row is not None:
            rows.append(line.row)
    if errors:
        raise KlingValidationError(errors[:10] if listed else errors)
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
        if name != key_field and name.endswith("_url") and cell.lstrip().startswith("{"):
            value = _kling_result(cell)  # an upstream Kling task's result, written as JSON
        elif name != key_field and name in _decoded_columns():
            try:
                value = json.loads(cell)
            except ValueError:
                value = cell
            if isinstance(value, str) or value is None:
                value = cell
        out[name] = value
    return out


def manifest_folder(source: Any) -> str | None:
    """The folder a manifest's relative media paths are read against: a local manifest's folder
    (absolute), or an object-storage manifest's prefix (``s3://bucket/in/``); None for a list of rows
    (XCom), whose relative paths stay as written. Nothing is read.

    :param source: a path, URL, ObjectStoragePath, JSON list text, or a list of dicts.
    """
    if isinstance(source, (list, tuple)) or (isinstance(source, str) and source.lstrip().startswith("[")):
        return None
    text = str(source)
    if hasattr(source, "fs") or ("://" in text and not text.startswith("file://")):
        return text.rsplit("/", 1)[0] + "/"
    local = os.path.abspath(os.path.expanduser(text.removeprefix("file://")))
    return os.path.dirname(local) + os.sep


def _kling_result(cell: str) -> Any:
    """A CSV cell holding an upstream Kling task's result dict (JSON), else the cell as written."""
    from airflow_provider_kling.utils.inputs import is_kling_result

    try:
        value = json.loads(cell)
    except ValueError:
        return cell
    return value if is_kling_result(value) else cell


def open_path(location: Any) -> Any:
    """A local Path or an ObjectStoragePath for ``location`` (a path, a URL, or either object)."""
    from airflow_provider_kling.utils.storage import as_path

    return as_path(location)


class Row:
    """One validated manifest row.

    :param index: its position in the manifest (0-based).
    :param key: the row key (the video is ``<output_prefix>/<key>.mp4``).
    :param request: the validated request (file inputs not yet read or signed); None with ``fields``:
        built from them on first use (a row of a manifest validated earlier, see :func:`load_rows`).
    :param spec: a hash of the row as written (no I/O): a changed row is a new generation; None:
        the request's fingerprint, computed on first use.
    :param fields: the row's fields as written (with the batch's parameters): ``request`` is built from
        them when None, and they are kept when a media input must be resolved before the row's POST.
    :param check_capabilities: how ``request`` is built from ``fields``.

    A row whose audio or video input is a local file, an object or an upstream result holds, as its
    ``request``, a stand-in for each of them (see :func:`row_request`): validated and priced, never
    sent; :attr:`media_fields` are resolved before its POST.
    """

    __slots__ = ("_check", "_fields", "_media", "_request", "_spec", "index", "key")

    def __init__(
        self,
        index: int,
        key: str,
        request: KlingRequest | None = None,
        spec: str | None = None,
        *,
        fields: dict[str, Any] | None = None,
        check_capabilities: bool = True,
    ) -> None:
        if request is None and fields is None:
            raise ValueError("a Row needs its request or its fields")
        self.index = index
        self.key = key
        self._request = request
        self._spec = spec
        self._fields = fields
        self._check = check_capabilities
        self._media = request is not None and fields is not None

    @property
    def request(self) -> KlingRequest:
        if self._request is None:
            self._request, self._media = row_request(dict(self._fields or {}), self._check)
        if not self._media:
            self._fields = None
        return self._request

    @property
    def media_fields(self) -> dict[str, Any] | None:
        """The row's fields as written when a media input must be resolved before its POST, else None."""
        _ = self.request
        return self._fields if self._media else None

    @property
    def spec(self) -> str:
        if self._spec is None:
            self._spec = self.request.fingerprint()
        return self._spec

    @spec.setter
    def spec(self, value: str) -> None:
        self._spec = value

    @property
    def model(self) -> str:
        if self._request is None:
            return str((self._fields or {}).get("model") or "").strip()
        return self._request.model

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return (self.index, self.key, self.spec) == (other.index, other.key, other.spec)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Row(index={self.index}, key={self.key!r}, model={self.model!r})"


def _row_fields(
    raw: dict[str, Any],
    index: int,
    *,
    model: str,
    parameters: dict[str, Any] | None,
    key_field: str,
    base: str | None = None,
) -> tuple[dict[str, Any], str]:
    """A row's request fields (the batch's parameters, the row's own on top) and its key.

    The row's own relative media paths are read against ``base`` (:func:`manifest_folder`); the
    batch's ``parameters`` keep theirs as written.
    """
    own = {k: v for k, v in raw.items() if k != key_field}
    if base is not None:
        from airflow_provider_kling.utils.inputs import anchor_paths

        own = anchor_paths(own, base)
    fields = {**(parameters or {}), **own}
    fields.setdefault("model", model)
    return fields, str(raw.get(key_field, f"row-{index:05d}")).strip()


def row_request(
    fields: dict[str, Any], check_capabilities: bool, hook: Any = None
) -> tuple[KlingRequest, bool]:
    """A row's request as validated before anything is paid, and whether its media must be resolved.

    Audio and video inputs that name a file, an object or an upstream result are checked without being
    read (:func:`~airflow_provider_kling.utils.inputs.resolve_media_inputs` with ``check_only``) and
    stand in as placeholder URLs naming what was written; images keep their path (checked by the
    request's validation and :func:`_probe_file_inputs`).

    :param fields: the row's fields (relative paths already read against the manifest's folder).
    :param check_capabilities: False to let models or fields the catalog does not know through.
    :param hook: the task's hook, to check that files to stage have ``input_staging``; None: unchecked.
    :raises KlingValidationError: naming each field that cannot be sent; nothing was sent.
    """
    from airflow_provider_kling.schemas.request import build_request
    from airflow_provider_kling.utils.inputs import resolve_media_inputs

    inputs = resolve_media_inputs(fields, hook, check_only=True)
    request = build_request(inputs.fields, check_capabilities=check_capabilities)
    return request, bool(inputs.identities)


def validate_rows(
    rows: list[dict[str, Any]],
    *,
    model: str,
    parameters: dict[str, Any] | None,
    key_field: str,
    check_capabilities: bool,
    probe_files: bool = True,
    base: str | None = None,
) -> list[Row]:
    """Validate every row against the catalog before anything is paid.

    Each row is ``parameters`` with the row's own fields on top (``model`` too); ``key_field`` names
    the row key (default: the row's position, ``row-00000``). File inputs are checked too (they exist,
    within the model's size limit, PNG or JPEG by their first bytes) without being downloaded.

    :param base: the folder the rows' relative media paths are read against (:func:`manifest_folder`
        of the file the rows came from); None leaves them as written.
    :raises KlingValidationError: one report naming every bad row and field; nothing was sent.
    """
    STATS.add(len(rows))
    errors: list[tuple[str, str]] = []
    out: list[Row] = []
    seen: dict[str, int] = {}
    if not rows:
        raise KlingValidationError([("manifest", "holds no rows")])
    for index, raw in enumerate(rows):
        fields, key = _row_fields(
            raw, index, model=model, parameters=parameters, key_field=key_field, base=base
        )
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
            request, media = row_request(fields, check_capabilities)
        except KlingValidationError as exc:
            errors.extend((f"{where} {name}", message) for name, message in exc.errors)
            continue
        spec = request.fingerprint()
        out.append(Row(index, key, request, spec, fields=fields if media else None))
    if probe_files and not errors:
        errors.extend(_probe_file_inputs(out))
    if errors:
        raise KlingValidationError(errors)
    return out


def _probe_file_inputs(rows: list[Row]) -> list[tuple[str, str]]:
    """Check every file input of every row (exists, size, PNG/JPEG) with a few threads."""
    from airflow_provider_kling import catalog
    from airflow_provider_kling.schemas.file_inputs import _image_slots
    from airflow_provider_kling.schemas.media import image_mime, is_file_reference, presign_image

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


class ValidationStats:
    """How many manifest rows were validated against the catalog in this process (:data:`STATS`).

    A resumption that finds its manifest unchanged validates none: watch :attr:`rows_validated`
    (see :mod:`~airflow_provider_kling.batch.validation`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows_validated = 0

    def add(self, rows: int) -> None:
        with self._lock:
            self.rows_validated += rows


#: Rows validated by :func:`~airflow_provider_kling.batch.validation.validate_manifest` and
#: :func:`validate_rows` in this process.
STATS = ValidationStats()
