"""Media inputs in every form a user can give, made into something the service can fetch.

:func:`resolve_media_inputs` runs when a task executes, before validation and before anything is
paid. Each audio or video input of a request (top level, in ``parameters`` or in ``elements``) may be:

- an http(s) URL or a data URI: sent as given;
- an object in storage (``s3://``, ``gs://``, an ObjectStoragePath): a short-lived presigned GET;
- a local file: the service takes audio and video only from a URL, so the file is uploaded once to
  the connection's ``input_staging`` prefix under the SHA-256 of its bytes (a re-run finds it there
  and uploads nothing) and presigned;
- the result of an upstream Kling task (its XCom dict, which an ``XComArg`` / ``.output`` renders
  to): its stored video (presigned, or staged when local), else a fresh URL from the service.

Image inputs given as files keep their own path (a Base64 data URI or a presigned URL, see
:mod:`~airflow_provider_kling.schemas.file_inputs`); an upstream result (a video) in an image field
is refused. Every input is also given a stable identity for the request's fingerprint: the
generation id of an upstream result, object and ETag of an object, the content hash of a local
file; never a signed URL nor a staging key, so a re-run matches its sidecar and pays nothing.

A batch manifest's rows go through the same resolution: :func:`anchor_paths` first reads a row's
relative local paths against the manifest's folder, and ``check_only=True`` validates a row's media
without reading, hashing, uploading or signing anything (each input stands in as a placeholder URL
that names what was written), so a manifest of any size is checked before anything is paid.
"""

from __future__ import annotations

import copy
import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_kling import catalog
from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.schemas.media import (
    PRESIGN_SCHEMES,
    PRESIGN_SECONDS,
    is_file_reference,
    presign_object,
)

if TYPE_CHECKING:
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.schemas.request import KlingRequest

#: Keys that mark a dict as the result of a Kling task (``RESULT_KEYS``): its id and where its video is.
RESULT_MARKERS = ("video_path", "video_url", "status")
#: Where :func:`resolve_media_inputs` with ``check_only`` points a media input it did not resolve (a
#: reserved, never resolvable domain): ``<STAND_IN><kind>/<hash of the input as written><suffix>``.
STAND_IN = "https://media-input.invalid/"
_CHUNK = 1024 * 1024
#: A memo of the local files one run (a batch pass) staged: one future per file state, so the
#: rows naming the same file read and upload it once.
StagedFiles = dict[tuple[Any, ...], Future[tuple[str, str]]]


@dataclass
class MediaInputs:
    """Request fields whose media inputs are all URLs or data URIs, and what identifies each input.

    :param fields: the fields to validate and send (presigned URLs in place of files and results).
    :param identities: slot label (``audio_url``, ``elements.0.video_url``) -> the input's stable
        identity, for slots whose sent value changes between runs (a signature) or is not the input.
    :param staged: how many files were uploaded to ``input_staging`` now (0 on a re-run).
    """

    fields: dict[str, Any]
    identities: dict[str, str] = field(default_factory=dict)
    staged: int = 0

    def stabilize(self, request: KlingRequest) -> KlingRequest:
        """``request`` with its fingerprint counting each resolved input by its identity.

        :param request: the request validated from :attr:`fields` (its file images already resolved).
        """
        if not self.identities:
            return request
        stable = copy.deepcopy(request.stable_fields or request.fields)
        for label, identity in self.identities.items():
            _set_slot(stable, label, identity)
        return request.with_fields(request.fields, stable)


def is_kling_result(value: Any) -> bool:
    """True when ``value`` is a Kling task's XCom result dict (a generation id and where its video is).

    :param value: any value of a media field.
    """
    return (
        isinstance(value, dict)
        and isinstance(value.get("generation_id"), str)
        and any(k in value for k in RESULT_MARKERS)
    )


def resolve_media_inputs(
    request_fields: dict[str, Any],
    hook: KlingHook | None,
    *,
    presign_seconds: int = PRESIGN_SECONDS,
    log: Any = None,
    check_only: bool = False,
    staged: StagedFiles | None = None,
) -> MediaInputs:
    """Make every audio/video input of ``request_fields`` a URL, and refuse results in image fields.

    Call it before validation (:func:`~airflow_provider_kling.schemas.request.build_request`), then
    :meth:`MediaInputs.stabilize` the validated request. Nothing is sent to the Kling service but a GET
    of an upstream generation whose video is not stored; objects are only presigned; a local file is
    uploaded to ``input_staging`` unless the same bytes are already there.

    :param request_fields: the request's fields as the user gave them (``model`` included; the
        seed's field names accepted). Not modified.
    :param hook: the task's hook: its connection names ``input_staging`` and reads upstream
        generations.
    :param presign_seconds: how long presigned URLs stay valid.
    :param log: a logger told how many inputs were resolved and how (never a URL).
    :param check_only: check each input without reading, hashing, uploading or signing it, nor asking
        the service (a batch's validation): a local file must exist (within the model's size limit),
        an upstream result may not fill an image field, and with ``hook`` given a file that must be
        staged needs ``input_staging``. Each audio/video input is replaced by a :data:`STAND_IN` URL
        naming what was written (so the fields validate, and a changed input changes the request).
        ``hook`` may be None.
    :param staged: a memo of the local files staged by the calls of one run (a batch pass): a file
        many rows name is hashed and uploaded once while its size, modification time and inode stay
        the same.
    :raises KlingValidationError: naming each input that cannot be sent and what would allow it;
        nothing was paid.
    """
    fields = dict(request_fields)
    model = fields.get("model") if isinstance(fields.get("model"), str) else ""
    if hook is None and not check_only:
        raise TypeError("resolve_media_inputs needs the task's hook unless check_only=True")
    resolver = _Resolver(hook, str(model).strip(), presign_seconds, check_only=check_only, staged=staged)
    errors: list[tuple[str, str]] = []
    identities: dict[str, str] = {}
    for label, current, kind, container, key in _media_slots(fields):
        value = container[key]
        try:
            found = resolver.resolve(value, kind, current)
        except ValueError as exc:
            errors.append((label, str(exc)))
            continue
        if found is not None:
            container[key], identities[current] = found
    if errors:
        raise KlingValidationError(errors)
    if log is not None and resolver.counts:
        log.info(
            "Media inputs made fetchable: %s (presigned URLs valid %s s, masked in logs)",
            ", ".join(f"{n} {how}" for how, n in sorted(resolver.counts.items())),
            presign_seconds,
        )
    return MediaInputs(fields, identities, resolver.counts.get("uploaded to input_staging", 0))


def anchor_paths(request_fields: dict[str, Any], base: str | None) -> dict[str, Any]:
    """``request_fields`` with every relative local path in a media slot read against ``base``.

    A batch manifest's row names its files relative to the manifest: ``clips/a.mp3`` in
    ``/data/in/manifest.jsonl`` is ``/data/in/clips/a.mp3``, and in ``s3://bucket/in/manifest.jsonl``
    it is ``s3://bucket/in/clips/a.mp3``. Absolute paths (``/``, ``~``), ``file://`` and any URL or
    data URI, upstream results and non-text values are left as written. Nothing is read.

    :param request_fields: a request's fields. Not modified.
    :param base: the folder relative paths are read against: a local folder, or an object-storage
        prefix ending in ``/``; None leaves every path as written.
    """
    fields = dict(request_fields)
    if not base:
        return fields
    for _label, _current, _kind, container, key in _media_slots(fields):
        value = container[key]
        if isinstance(value, str) and _is_relative_path(value.strip()):
            container[key] = _under(base, value.strip())
    return fields


def _is_relative_path(value: str) -> bool:
    return (
        bool(value)
        and urlsplit(value).scheme == ""
        and is_file_reference(value)
        and not value.startswith(("/", "~", "\\"))
        and not os.path.isabs(value)
    )


def _under(base: str, relative: str) -> str:
    """``relative`` read against the folder ``base`` (local, or an object-storage prefix)."""
    parts = urlsplit(base)
    if parts.scheme.lower() in ("", "file"):
        return os.path.normpath(os.path.join(base.removeprefix("file://"), relative))
    root = f"{parts.scheme}://{parts.netloc}"
    path = posixpath.normpath(posixpath.join(parts.path or "/", relative.replace(os.sep, "/")))
    return root + (path if path.startswith("/") else f"/{path}")


# ------------------------------------------------------------------------------------ slots
def _media_slots(fields: dict[str, Any]) -> Iterator[tuple[str, str, str, Any, Any]]:
    """Every media slot: (label as written, label under current names, kind, container, key).

    Containers are copied on the way down, so replacing a value never touches the caller's objects.
    """
    for name in list(fields):
        current = catalog.ALIASES.get(name, name)
        kind = catalog.FIELDS.get(current, {}).get("type")
        value = fields[name]
        if kind in ("image", "audio", "video"):
            yield name, current, kind, fields, name
        elif kind in ("images", "image_or_pair") and isinstance(value, (list, tuple)):
            items = fields[name] = list(value)
            for i in range(len(items)):
                yield f"{name}.{i}", f"{current}.{i}", "image", items, i
        elif kind == "image_or_pair":
            yield name, current, "image", fields, name
        elif kind == "dynamic_masks" and isinstance(value, (list, tuple)):
            masks = fields[name] = [dict(m) if isinstance(m, dict) else m for m in value]
            for i, mask in enumerate(masks):
                for key in ("mask", catalog.MASK_SEED_NAME):
                    if isinstance(mask, dict) and key in mask:
                        yield f"{name}.{i}.{key}", f"{current}.{i}.mask", "image", mask, key
        elif kind == "elements" and isinstance(value, (list, tuple)):
            elements = fields[name] = [dict(e) if isinstance(e, dict) else e for e in value]
            for i, element in enumerate(elements):
                if not isinstance(element, dict):
                    continue
                refs = element.get("reference_image_urls")
                if isinstance(refs, (list, tuple)):
                    refs = element["reference_image_urls"] = list(refs)
                    for j in range(len(refs)):
                        label = f"{name}.{i}.reference_image_urls.{j}"
                        yield label, label, "image", refs, j
                for key, kind_here in (("frontal_image_url", "image"), ("video_url", "video")):
                    if key in element:
                        yield f"{name}.{i}.{key}", f"{current}.{i}.{key}", kind_here, element, key


def _set_slot(fields: dict[str, Any], label: str, value: Any) -> None:
    parts = label.split(".")
    node: Any = fields
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value


# ------------------------------------------------------------------------------------ resolution
class _Resolver:
    """Resolves one input at a time for one request (the hook, the model and the staging prefix)."""

    def __init__(
        self,
        hook: KlingHook | None,
        model: str,
        presign_seconds: int,
        *,
        check_only: bool = False,
        staged: StagedFiles | None = None,
    ) -> None:
        self.hook = hook
        self.model = model
        self.presign_seconds = presign_seconds
        self.check_only = check_only
        self.staged = staged
        self.counts: dict[str, int] = {}

    def _hook(self) -> KlingHook:
        if self.hook is None:  # only check_only runs without one, and it reads nothing
            raise TypeError("resolving media inputs needs the task's hook")
        return self.hook

    def _count(self, how: str) -> None:
        self.counts[how] = self.counts.get(how, 0) + 1

    def _limit(self, name: str) -> int | None:
        spec = catalog.FIELDS.get(name) or {}
        if self.model and catalog.model_entry(self.model) is not None and name in catalog.FIELDS:
            spec = catalog.field_spec(self.model, name)
        limit = spec.get("max_bytes")
        return int(limit) if isinstance(limit, int) else None

    def resolve(self, value: Any, kind: str, label: str) -> tuple[str, str] | None:
        """(value to send, identity) for an input that needs resolving; None to leave it as it is."""
        if is_kling_result(value):
            if kind in catalog.BASE64_MEDIA:
                raise ValueError(
                    f"is the result of Kling task generation {value['generation_id']!r} (a video), but "
                    f"this field takes an image"
                )
            if self.check_only:
                return _stand_in(kind, f"kling-generation:{value['generation_id']}", "")
            return self._from_result(value, label)
        if kind in catalog.BASE64_MEDIA:
            return None  # files in image fields: a data URI or presigned after validation
        if hasattr(value, "fs") or isinstance(value, os.PathLike):
            value = str(value)
        if not isinstance(value, str) or not value.strip() or not is_file_reference(value.strip()):
            return None  # URLs, data URIs and wrong types: validation says what is allowed
        if self.check_only:
            return self._check_file(value.strip(), kind, label)
        return self._from_file(value.strip(), label)

    def _check_file(self, ref: str, kind: str, label: str) -> tuple[str, str]:
        """A file input checked without reading it: a local file's size, and where it would go."""
        local = _local_path(ref)
        if local is not None:
            self._check_local(local, label.rsplit(".", 1)[-1])
        staged = local is not None or urlsplit(ref).scheme.lower() not in PRESIGN_SCHEMES
        if self.hook is not None and staged:
            self._staging(label, ref)
        suffix = Path(urlsplit(ref).path if local is None else str(local)).suffix.lower()[:16]
        return _stand_in(kind, ref, suffix)

    def _check_local(self, local: Path, name: str) -> None:
        """A local file exists, within the model's size limit (one ``stat``)."""
        try:
            size = local.stat().st_size
        except OSError:
            size = None
        if size is None or not local.is_file():
            raise ValueError(
                f"names the local file {str(local)!r}, which does not exist (an http(s) URL or an "
                "object-storage URL is also accepted)"
            )
        limit = self._limit(name)
        if limit is not None and size > limit:
            raise ValueError(f"is a file of {size} bytes; this model takes at most {limit} bytes here")

    def _from_file(self, ref: str, label: str) -> tuple[str, str]:
        """A local file or an object in storage, for a field that takes no Base64."""
        name = label.rsplit(".", 1)[-1]
        limit = self._limit(name)
        scheme = urlsplit(ref).scheme.lower()
        if scheme in PRESIGN_SCHEMES:
            found = presign_object(ref, limit, self.presign_seconds)
            if found is not None:
                url, identity = found
                self._count("presigned from object storage")
                return url, identity or f"sha256:{_digest_of(ref)}"
        # A local file, or a store that cannot sign: its bytes go to input_staging.
        local = _local_path(ref)
        if local is not None:
            self._check_local(local, name)
        staging = self._staging(label, ref)
        return self._stage(ref, local, staging)

    def _staging(self, label: str, ref: str) -> str:
        staging = self._hook().endpoint.input_staging
        if staging is None:
            raise ValueError(
                f"names the file {ref!r}, which the service cannot take as Base64 here and this task "
                "cannot hand over: set the kling connection's extra input_staging to an object-storage "
                'prefix (e.g. {"input_staging": "s3://bucket/kling-inputs/"}) so it is uploaded once '
                "and presigned, or pass an http(s) URL (or a presignable s3:// / gs:// object)"
            )
        return staging

    def _stage(self, ref: str, local: Path | None, staging: str) -> tuple[str, str]:
        """Upload the file under ``<staging><sha256><ext>`` unless already there; presign it."""
        if local is None or self.staged is None:
            target, digest = self._upload(ref, local, staging)
        else:
            target, digest = self._upload_once(ref, local, staging, self.staged)
        found = presign_object(target, None, self.presign_seconds)
        if found is None:
            raise ValueError(
                f"was staged at input_staging, but that storage cannot presign {target!r}: give the "
                "connection of input_staging credentials that can sign"
            )
        return found[0], f"sha256:{digest}"

    def _upload_once(
        self, ref: str, local: Path, staging: str, staged: dict[tuple[Any, ...], Future[tuple[str, str]]]
    ) -> tuple[str, str]:
        """:meth:`_upload` once per state of a local file in the memo the caller shares (a batch pass).

        The first of the batch's submit threads to name the file hashes and uploads it; the others
        naming it meanwhile wait for that, rather than read and upload it again.
        """
        stat = local.stat()
        key = (str(local.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, staging)
        mine: Future[tuple[str, str]] = Future()
        found = staged.setdefault(key, mine)  # one step under the GIL: one thread wins
        if found is not mine:
            self._count("already in input_staging")
            return found.result()
        try:
            mine.set_result(self._upload(ref, local, staging))
        except BaseException as exc:
            del staged[key]  # the next row tries again
            mine.set_exception(exc)
            raise
        return mine.result()

    def _upload(self, ref: str, local: Path | None, staging: str) -> tuple[str, str]:
        """(object URL, SHA-256) of the file in ``staging``, uploaded unless the same bytes are there."""
        from airflow_provider_kling.utils.storage import as_path

        suffix = Path(urlsplit(ref).path if local is None else str(local)).suffix.lower()[:16]
        with tempfile.TemporaryDirectory(prefix="kling-input-") as scratch:
            if local is None:  # a store that cannot sign: a local copy first, streamed
                local = Path(scratch) / f"input{suffix}"
                with as_path(ref).open("rb") as src, local.open("wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            digest = _file_digest(local)
            target = as_path(f"{staging}{digest}{suffix}")
            size = local.stat().st_size
            try:
                present = target.fs.info(target.path).get("size") == size
            except FileNotFoundError:
                present = False
            if not present:
                # put_file publishes the object only once whole (multipart completes at the end).
                target.fs.put_file(str(local), target.path)
                self._count("uploaded to input_staging")
            else:
                self._count("already in input_staging")
        return str(target), digest

    def _from_result(self, result: dict[str, Any], label: str) -> tuple[str, str]:
        """An upstream task's result: its stored video, else a fresh URL from the service."""
        generation_id = result["generation_id"]
        identity = f"kling-generation:{generation_id}"
        stored = result.get("video_path")
        if isinstance(stored, str) and stored:
            scheme = urlsplit(stored).scheme.lower()
            if scheme in PRESIGN_SCHEMES:
                try:
                    found = presign_object(stored, None, self.presign_seconds)
                except ValueError:
                    found = None  # moved or deleted since: ask the service
                if found is not None:
                    self._count("presigned from upstream results")
                    return found[0], identity
            local = _local_path(stored)
            staging = self._hook().endpoint.input_staging
            if local is not None and local.is_file() and staging:
                url, _ = self._stage(stored, local, staging)
                return url, identity
        return self._service_url(result, label), identity

    def _service_url(self, result: dict[str, Any], label: str) -> str:
        from airflow.providers.common.compat.sdk import mask_secret

        from airflow_provider_kling.schemas.generation import GenerationStatus

        generation_id = result["generation_id"]
        api = result.get("endpoint") if result.get("endpoint") in catalog.ENDPOINT_PATHS else None
        generation = self._hook().get_generation(generation_id, api=api)
        if generation.status is not GenerationStatus.COMPLETED or not generation.video_url:
            raise ValueError(
                f"is the result of Kling generation {generation_id!r}, which is {generation.raw_status!r} "
                "with no video yet: wait for it (wait_for_completion=True or KlingGenerationSensor)"
            )
        mask_secret(generation.video_url)
        self._count("read from the service")
        return generation.video_url


def _stand_in(kind: str, written: str, suffix: str) -> tuple[str, str]:
    """(placeholder URL, identity) of an input checked but not resolved: both name ``written``."""
    url = f"{STAND_IN}{kind}/{hashlib.sha256(written.encode()).hexdigest()[:32]}{suffix}"
    return url, url


def _local_path(ref: str) -> Path | None:
    """The local path ``ref`` names (a path or ``file://``), None for an object-storage URL."""
    if urlsplit(ref).scheme.lower() in ("", "file"):
        return Path(ref.removeprefix("file://")).expanduser()
    return None


def _file_digest(path: Any) -> str:
    """The SHA-256 of a file's bytes (local or in storage), read in chunks (Python 3.10 has no
    ``hashlib.file_digest``)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digest_of(ref: str) -> str:
    """The SHA-256 of an object's bytes (a store that tags no version)."""
    from airflow_provider_kling.utils.storage import as_path

    return _file_digest(as_path(ref))


__all__ = [
    "RESULT_MARKERS",
    "STAND_IN",
    "MediaInputs",
    "anchor_paths",
    "is_kling_result",
    "resolve_media_inputs",
]
