"""What the gallery may stream: only videos under the roots the deployment configured.

A Kling result's ``video_path`` is written by a task (or by anyone who may write an XCom), so it is
never trusted as a file name. The gallery streams a video only when all of these hold:

* ``[kling] gallery_roots`` names where it lives: a local folder, or an object-storage prefix with
  its scheme and connection id (``s3://aws_default@bucket/videos``). Nothing configured: nothing is
  streamed; the page shows the metadata and says how to enable streaming.
* A local path, resolved with every symlink followed, stays inside a configured folder (itself
  resolved), and is a regular file, opened without following a last symlink; an object path has the
  root's scheme, connection id and bucket and lies under its prefix, with no ``.``/``..`` segment.
* The provider's sidecar (``<video>.kling.json``) sits beside the video and names the generation
  id the result names; for a batch row, it also names the batch's DAG.
* A batch's results manifest is read only under the same roots, and only when its own sidecar
  (``<results>.kling.json``) names the DAG whose result points at it (:func:`read_results`).

Whatever is streamed goes out as a video type from an allow-list (else
``application/octet-stream``), with ``nosniff``, a sandboxing Content-Security-Policy and
``Content-Disposition: inline``, so no file can run as a page on the Airflow origin.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

#: The config option (section ``kling``) naming what the gallery may stream.
ROOTS_OPTION = "gallery_roots"
#: Said wherever streaming is off or a video is refused: how to turn it on.
HOW_TO_ENABLE = (
    "set [kling] gallery_roots (AIRFLOW__KLING__GALLERY_ROOTS) on the api-server to the folders or "
    "object-storage prefixes (scheme://conn_id@bucket/prefix) the Kling tasks download to, "
    "comma-separated"
)
#: The only types a video is served as; anything else is a download of unknown bytes.
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime"}
#: Headers on every streamed body: never sniffed, never a document that runs script.
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Content-Disposition": "inline",
    "Cache-Control": "private, max-age=300",
}
#: Longest offset a Range header may name (digits): larger numbers are unsatisfiable, never parsed.
MAX_RANGE_DIGITS = 18
_RANGE_NUMBER = re.compile(r"\d+")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


class StreamRefused(Exception):
    """The video may not be streamed; the message says why (never the file's contents)."""


@dataclass(frozen=True)
class Roots:
    """The configured streaming roots.

    :param local: resolved local folders.
    :param remote: object-storage prefixes as ``(scheme, netloc, key prefix)``.
    """

    local: tuple[Path, ...] = ()
    remote: tuple[tuple[str, str, str], ...] = ()

    @property
    def enabled(self) -> bool:
        """Whether anything may be streamed at all."""
        return bool(self.local or self.remote)


def parse_roots(value: str | None) -> Roots:
    """The roots of a ``gallery_roots`` value: comma- or newline-separated folders and prefixes.

    :param value: the option's text; relative folders and unreadable entries are ignored.
    """
    local: list[Path] = []
    remote: list[tuple[str, str, str]] = []
    for raw in re.split(r"[,\n]", value or ""):
        entry = raw.strip()
        if not entry or _UNSAFE.search(entry):
            continue
        if "://" in entry and not entry.startswith("file://"):
            parts = urlsplit(entry)
            key = _clean_key(parts.path)
            if parts.scheme and parts.netloc and key is not None:
                remote.append((parts.scheme.lower(), parts.netloc, key.rstrip("/")))
            continue
        folder = Path(entry.removeprefix("file://"))
        if folder.is_absolute():
            local.append(folder.resolve())
    return Roots(tuple(local), tuple(remote))


def configured_roots() -> Roots:
    """The roots of ``[kling] gallery_roots`` as the api-server has it now."""
    from airflow.configuration import conf

    return parse_roots(conf.get("kling", ROOTS_OPTION, fallback=""))


def _clean_key(path: str) -> str | None:
    """An object key without a leading slash; None when it holds ``.``/``..`` segments or odd bytes."""
    if _UNSAFE.search(path):
        return None
    segments = path.strip("/").split("/") if path.strip("/") else []
    if any(s in (".", "..") for s in segments):
        return None
    return "/".join(s for s in segments if s)


def _is_remote(video_path: str) -> bool:
    return "://" in video_path and not video_path.startswith("file://")


def may_stream(video_path: Any, roots: Roots) -> bool:
    """A cheap check, without I/O, for the listing: whether ``video_path`` lies under a root by name.

    :param video_path: the result's ``video_path``.
    :param roots: the configured roots.
    """
    if not isinstance(video_path, str) or not video_path or _UNSAFE.search(video_path):
        return False
    if _is_remote(video_path):
        return _remote_root(video_path, roots) is not None
    path = Path(video_path.removeprefix("file://"))
    return path.is_absolute() and any(_inside(Path(os.path.normpath(path)), root) for root in roots.local)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _remote_root(video_path: str, roots: Roots) -> tuple[str, str, str] | None:
    parts = urlsplit(video_path)
    key = _clean_key(parts.path)
    if key is None or parts.query or parts.fragment:
        return None
    for scheme, netloc, prefix in roots.remote:
        if parts.scheme.lower() == scheme and parts.netloc == netloc:
            if not prefix or key.startswith(prefix + "/"):
                return scheme, netloc, prefix
    return None


def media_type(name: str) -> str:
    """The type a video is served as: from :data:`VIDEO_TYPES` by suffix, else octet-stream."""
    return VIDEO_TYPES.get(PurePosixPath(name).suffix.lower(), "application/octet-stream")


def _sidecar_names(record: Any, generation_id: str | None, dag_id: str | None = None) -> bool:
    if not isinstance(record, dict):
        return False
    if generation_id is not None and str(record.get("generation_id")) != generation_id:
        return False
    return dag_id is None or record.get("dag_id") == dag_id


@dataclass
class LocalVideo:
    """A local video checked for streaming, held open so a later rename or symlink cannot swap it.

    :param fd: the open file descriptor (closed by :meth:`close`).
    :param path: the resolved path.
    :param stat_result: the open file's ``fstat``.
    """

    fd: int
    path: Path
    stat_result: os.stat_result

    @property
    def served_path(self) -> str:
        """A path that opens exactly this file: the descriptor's own link on Linux, else the path."""
        proc = f"/proc/self/fd/{self.fd}"
        return proc if os.path.exists(proc) else str(self.path)

    def close(self) -> None:
        """Close the descriptor (after the response is sent)."""
        os.close(self.fd)


def open_local(video_path: str, generation_id: str, roots: Roots, dag_id: str | None = None) -> LocalVideo:
    """Open a local video for streaming after every check of the module docstring.

    :param video_path: the result's ``video_path``.
    :param generation_id: the result's generation id; the sidecar must name it.
    :param roots: the configured roots.
    :param dag_id: for a batch row, the batch's DAG; the sidecar must name it too.
    :raises StreamRefused: when any check fails.
    """
    return _open_checked(video_path, roots, generation_id, dag_id, "video")


def _open_checked(
    path_text: str, roots: Roots, generation_id: str | None, dag_id: str | None, what: str
) -> LocalVideo:
    """Open a local file under a root, with a sidecar naming ``generation_id`` / ``dag_id``."""
    raw = Path(path_text.removeprefix("file://"))
    if not raw.is_absolute():
        raise StreamRefused(f"the {what} path is not absolute")
    try:
        resolved = raw.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise StreamRefused(f"the {what} is no longer in its storage") from exc
    root = next((r for r in roots.local if _inside(resolved, r)), None)
    if root is None or resolved == root:
        raise StreamRefused(f"the {what} is outside the configured gallery roots")
    try:
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise StreamRefused(f"the {what} cannot be opened") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StreamRefused(f"the {what} is not a regular file")
        proc = f"/proc/self/fd/{fd}"
        if os.path.exists(proc) and not _inside(Path(os.readlink(proc)), root):
            raise StreamRefused(f"the {what} is outside the configured gallery roots")
        if not _sidecar_names(_read_local_sidecar(resolved, root), generation_id, dag_id):
            raise StreamRefused(
                f"no sidecar beside the {what} names this {'generation' if generation_id else 'DAG'}"
            )
    except BaseException:
        os.close(fd)
        raise
    return LocalVideo(fd, resolved, info)


def _read_local_sidecar(video: Path, root: Path) -> Any:
    sidecar = video.parent / f"{video.name}.kling.json"
    try:
        if not _inside(sidecar.resolve(strict=True), root):
            return None
        fd = os.open(sidecar, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        try:
            return json.loads(handle.read(64 * 1024))
        except ValueError:
            return None


def open_remote(
    video_path: str, generation_id: str | None, roots: Roots, dag_id: str | None = None
) -> tuple[Any, int]:
    """An object-storage video checked for streaming, and its size.

    :param video_path: the result's ``video_path`` (``scheme://conn_id@bucket/key``).
    :param generation_id: the result's generation id; the sidecar must name it.
    :param roots: the configured roots.
    :param dag_id: for a batch row, the batch's DAG; the sidecar must name it too.
    :raises StreamRefused: when any check fails.
    """
    if _remote_root(video_path, roots) is None:
        raise StreamRefused("the video is outside the configured gallery roots")
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    path = ObjectStoragePath(video_path)
    try:
        if not path.is_file():
            raise StreamRefused("the video is not a file in its storage")
        size = int(path.stat().st_size)
        sidecar = path.parent / f"{path.name}.kling.json"
        with sidecar.open("rb") as handle:
            record = json.loads(handle.read(64 * 1024))
    except StreamRefused:
        raise
    except Exception as exc:
        raise StreamRefused("the video or its sidecar cannot be read from its storage") from exc
    if not _sidecar_names(record, generation_id, dag_id):
        raise StreamRefused("no sidecar beside the video names this generation")
    return path, size


def read_results(results_path: Any, dag_id: str, roots: Roots, max_bytes: int) -> bytes:
    """The first ``max_bytes`` of a batch's results manifest, after the checks a video gets.

    The summary XCom naming the manifest is written by a task: the manifest is read only under a
    configured root, and only when its sidecar (``<results>.kling.json``, written by the batch) names
    ``dag_id``, the DAG whose result points at it.

    :param results_path: the summary's ``results``.
    :param dag_id: the DAG of the XCom that named it.
    :param roots: the configured roots.
    :param max_bytes: most bytes read.
    :raises StreamRefused: when any check fails.
    """
    if not isinstance(results_path, str) or not may_stream(results_path, roots):
        raise StreamRefused("the results manifest is outside the configured gallery roots")
    if not _is_remote(results_path):
        opened = _open_checked(results_path, roots, None, dag_id, "results manifest")
        with os.fdopen(opened.fd, "rb") as handle:
            return handle.read(max_bytes)
    path, _ = open_remote(results_path, None, roots, dag_id)
    try:
        with path.open("rb") as handle:
            return bytes(handle.read(max_bytes))
    except Exception as exc:
        raise StreamRefused("the results manifest cannot be read from its storage") from exc


def range_too_long(header: str | None) -> bool:
    """Whether a Range header names a number longer than :data:`MAX_RANGE_DIGITS` digits."""
    return bool(header) and any(
        len(n) > MAX_RANGE_DIGITS for n in _RANGE_NUMBER.findall(str(header)[: 16 * 1024])
    )
