"""Catalog-scale manifests: validating one as it streams, with bounded memory, before anything is
paid (:func:`validate_manifest`), and telling a manifest checked before from a changed one without
reading it again (:func:`unchanged_check`), so a resumption validates nothing twice.

Loaded only when a batch task runs (never at DAG parse).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from airflow_provider_kling.batch.manifest import (
    _REPORT_ROWS,
    KEY_RULE,
    STATS,
    Row,
    _probe_file_inputs,
    _row_fields,
    iter_manifest,
    manifest_folder,
    open_path,
    row_request,
)
from airflow_provider_kling.exceptions import KlingValidationError

#: Rows whose file inputs are checked together while a manifest streams (bounds what is held).
_PROBE_CHUNK = 512


class ManifestInvalid(KlingValidationError):
    """A manifest with bad rows: the message names the first of them; nothing was sent.

    :param problems: the first ``(row, message)`` pairs found, in manifest order.
    :param total_problems: every problem found.
    :param bad_rows: rows (or lines) with at least one problem.
    :param rows: rows read.
    """

    def __init__(
        self, problems: list[tuple[str, str]], total_problems: int, bad_rows: int, rows: int
    ) -> None:
        self.problems = problems
        self.total_problems = total_problems
        self.bad_rows = bad_rows
        self.rows = rows
        lines = [f"  {name}: {message}" for name, message in problems]
        more = total_problems - len(problems)
        tail = f"\n  ... and {more} more problem(s)" if more > 0 else ""
        report = (
            f"{bad_rows} of {rows} manifest rows are not valid; nothing was sent, nothing paid:\n"
            + "\n".join(lines)
            + tail
        )
        super().__init__([("manifest", report)])


@dataclass
class ManifestCheck:
    """What a streamed validation of a manifest found (kept in the batch state as :meth:`record`).

    :param rows: the rows validated.
    :param sha256: the manifest's content hash (a list's rows as JSON).
    :param identity: the file's cheap identity (size and mtime, or size and ETag), None for a list.
    :param settings: a hash of the batch settings the rows were validated with.
    """

    rows: int
    sha256: str
    identity: dict[str, Any] | None
    settings: str

    def record(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "sha256": self.sha256,
            "identity": self.identity,
            "settings": self.settings,
        }


def settings_hash(model: str, parameters: dict[str, Any] | None, key_field: str, check: bool) -> str:
    """A hash of the batch settings a manifest's rows are validated with."""
    text = json.dumps(
        [model, parameters, key_field, check], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def manifest_identity(source: Any) -> dict[str, Any] | None:
    """The manifest file's cheap identity, read without opening it: size and mtime (local) or size and
    ETag / last-modified (object storage). None for a list of rows or a file that cannot be stat'ed.

    :param source: a path, URL, ObjectStoragePath, JSON list text, or a list of dicts.
    """
    if isinstance(source, (list, tuple)) or (isinstance(source, str) and source.lstrip().startswith("[")):
        return None
    try:
        path = open_path(source)
        if hasattr(path, "fs"):
            info = path.fs.info(path.path)
            keep = ("size", "ETag", "etag", "e_tag", "LastModified", "last_modified", "mtime", "generation")
            found = {k: str(info[k]) for k in keep if info.get(k) is not None}
            if not any(k != "size" for k in found):
                return None  # a store that reports no version: only the content hash can tell
        else:
            stat = os.stat(path)
            found = {"size": str(stat.st_size), "mtime_ns": str(stat.st_mtime_ns)}
    except Exception:
        return None
    return {"location": str(source), **found}


def manifest_digest(source: Any) -> str:
    """The manifest's content hash, streamed (no row is parsed): what :class:`ManifestCheck` records."""
    digest = hashlib.sha256()
    if isinstance(source, (list, tuple)) or (isinstance(source, str) and source.lstrip().startswith("[")):
        for _ in iter_manifest(source, digest=digest):
            pass
        return digest.hexdigest()
    try:
        with open_path(source).open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        raise KlingValidationError([("manifest", f"{source} does not exist")]) from None
    return digest.hexdigest()


def unchanged_check(source: Any, recorded: Any, settings: str) -> dict[str, Any] | None:
    """The recorded check of this manifest when neither it nor the settings changed since, else None.

    The file's identity (size and mtime or ETag) decides without reading it; a file whose identity
    moved but whose content hash did not (touched, copied again) is unchanged too.

    :param source: the manifest.
    :param recorded: a :meth:`ManifestCheck.record` from the batch state (or None).
    :param settings: :func:`settings_hash` of the settings now.
    """
    if not isinstance(recorded, dict) or recorded.get("settings") != settings or not recorded.get("sha256"):
        return None
    identity = manifest_identity(source)
    if identity is not None and identity == recorded.get("identity"):
        return recorded
    if manifest_digest(source) == recorded["sha256"]:
        return {**recorded, "identity": identity}
    return None


def validate_manifest(
    source: Any,
    *,
    model: str,
    parameters: dict[str, Any] | None,
    key_field: str,
    check_capabilities: bool,
    probe_files: bool = True,
    max_errors: int = _REPORT_ROWS,
    hook: Any = None,
) -> ManifestCheck:
    """Validate every row of a manifest against the catalog as it streams, before anything is paid.

    Memory stays bounded by the row keys (for the duplicate check) and the first ``max_errors``
    problems: no list of rows is built and the file is never read whole. Image files are checked
    (exists, size, PNG/JPEG) a chunk of rows at a time; audio and video inputs are checked without
    being read (a local file exists within the size limit; nothing is hashed or uploaded). A row's
    relative paths are read against the manifest's folder (:func:`manifest_folder`).

    :param source: a JSONL / CSV path or URL, an ObjectStoragePath, JSON list text, or a list of dicts.
    :param model: the model of rows that name none.
    :param parameters: fields shared by every row (a row's own fields win).
    :param key_field: the column holding the row key.
    :param check_capabilities: False to let models or fields the catalog does not know through.
    :param probe_files: check file inputs too.
    :param max_errors: most problems named in the error (all are counted).
    :param hook: the task's hook: a local audio/video file then needs the connection's
        ``input_staging`` (None: not checked here).
    :raises ManifestInvalid: naming the first bad rows (row number, line, key, field, what is allowed).
    """
    base = manifest_folder(source)
    identity = manifest_identity(source)
    digest = hashlib.sha256()
    problems: list[tuple[str, str]] = []
    total = bad = 0
    seen: dict[str, int] = {}
    chunk: list[Row] = []

    def problem(where: str, message: str) -> None:
        nonlocal total
        total += 1
        if len(problems) < max_errors:
            problems.append((where, message))

    def probe(rows: list[Row]) -> None:
        nonlocal bad
        found = _probe_file_inputs(rows)
        bad += len({name.split(" ", 2)[1] for name, _ in found})
        for name, message in found:
            problem(name, message)
        rows.clear()

    index = 0
    for line in iter_manifest(source, key_field, digest=digest):
        if line.row is None:
            bad += 1
            problem(f"manifest line {line.number}", str(line.error))
            continue
        fields, key = _row_fields(
            line.row, index, model=model, parameters=parameters, key_field=key_field, base=base
        )
        named = f", {key_field} {key!r}" if key_field in line.row else ""
        where = f"row {index} (line {line.number}{named})"
        failed = False
        if not KEY_RULE.match(key) or key.endswith(".kling.json"):
            failed = True
            problem(
                where, f"{key_field} must be 1-128 letters, digits, '.', '_' or '-' (it names the video file)"
            )
        elif key in seen:
            failed = True
            problem(where, f"{key_field} {key!r} is also the key of row {seen[key]}")
        else:
            seen[key] = index
        STATS.add(1)
        try:
            request, _media = row_request(fields, check_capabilities, hook)
        except KlingValidationError as exc:
            failed = True
            for name, message in exc.errors:
                problem(f"{where} {name}", message)
        else:
            if probe_files and not total:
                chunk.append(Row(index, key, request, ""))
        bad += failed
        index += 1
        if len(chunk) >= _PROBE_CHUNK:
            probe(chunk)
    if chunk and not total:
        probe(chunk)
    if index == 0 and not total:
        raise KlingValidationError([("manifest", "holds no rows")])
    if total:
        raise ManifestInvalid(problems, total, bad, index)
    return ManifestCheck(
        index, digest.hexdigest(), identity, settings_hash(model, parameters, key_field, check_capabilities)
    )


def load_rows(
    source: Any, *, model: str, parameters: dict[str, Any] | None, key_field: str, check_capabilities: bool
) -> list[Row]:
    """The rows of a manifest already validated (:func:`validate_manifest`), in order, not validated
    again: each row's request is built when first used (when it is sent, or its spec is needed).

    :param source: the manifest.
    """
    out: list[Row] = []
    index = 0
    base = manifest_folder(source)
    for line in iter_manifest(source, key_field):
        if line.row is None:
            continue
        fields, key = _row_fields(
            line.row, index, model=model, parameters=parameters, key_field=key_field, base=base
        )
        out.append(Row(index, key, fields=fields, check_capabilities=check_capabilities))
        index += 1
    return out


def check_manifest_once(
    settings: Any, known: Any, log: Any, *, announce: bool, hook: Any = None
) -> tuple[dict[str, Any], str]:
    """Check a batch's manifest unless an earlier pass or try checked the same one with the same
    settings (its size and mtime or ETag, else its content hash, tell it is the same).

    :param settings: the batch's :class:`~airflow_provider_kling.batch.settings.BatchSettings`.
    :param known: what the batch's state recorded of the manifest last time, if anything.
    :param log: where the problems (and a skipped check) are said.
    :param announce: say that an earlier try's check stands (the try's first pass).
    :param hook: the task's hook (local audio/video files then need ``input_staging``).
    :return: the manifest's record to keep in the state, and the hash of the settings it was checked with.
    :raises ManifestInvalid: a row is invalid (every problem is logged first).
    """
    checked_with = settings_hash(
        settings.model, settings.parameters, settings.key_field, settings.check_capabilities
    )
    unchanged = unchanged_check(settings.manifest, known, checked_with)
    if unchanged is not None:
        if announce:
            log.info(
                "The manifest (%s rows) was checked by an earlier try: not checked again", unchanged["rows"]
            )
        return unchanged, checked_with
    try:
        check = validate_manifest(
            settings.manifest,
            model=settings.model,
            parameters=settings.parameters,
            key_field=settings.key_field,
            check_capabilities=settings.check_capabilities,
            hook=hook,
        )
    except ManifestInvalid as exc:
        for name, message in exc.problems:
            log.error("Manifest: %s: %s", name, message)
        raise
    return check.record(), checked_with
