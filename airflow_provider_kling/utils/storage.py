"""Destinations and atomic writes: text to a local Path or ObjectStoragePath, safe file names,
and writes a reader sees whole or not at all.

Local paths and object stores (``s3://``, ``gs://`` ... through Airflow's ObjectStoragePath) are
handled alike; ObjectStoragePath is imported only when a destination is remote. A local file is
written beside its target and renamed into place; an object is written to its own key uncommitted
(fsspec's per-file ``autocommit=False``) and committed only when whole, so no copy is made on the
store. A filesystem whose files cannot defer their commit keeps the write-beside-then-move path.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.exceptions import KlingDownloadError

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Part size for uploads to object storage (S3's smallest multipart part is 5 MiB).
WRITE_BLOCK = 8 * 1024 * 1024


def safe_file_name(name: str) -> str:
    """A file name with no directory parts or odd characters (ids and URLs come from the service)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "video"
    return name[:200]


def is_remote(destination: Any) -> bool:
    """True for an ObjectStoragePath or text with a scheme other than ``file://``."""
    if isinstance(destination, (str, os.PathLike)) and not hasattr(destination, "fs"):
        text = os.fspath(destination)
        return "://" in text and not text.startswith("file://")
    return hasattr(destination, "fs")


def as_path(destination: Any) -> Any:
    """A local Path or an ObjectStoragePath for ``destination`` (text, a path, or an ObjectStoragePath).

    Text with a scheme other than ``file://`` is an object-store URL; ``file://`` and plain paths are
    local (``~`` expanded).

    :param destination: where to read or write.
    """
    if is_remote(destination):
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return destination if hasattr(destination, "fs") else ObjectStoragePath(str(destination))
    text = os.fspath(destination)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return Path(text).expanduser()


def resolve_destination(destination: Any, file_name: str) -> Any:
    """A local Path or an ObjectStoragePath for the file to write; a folder gets ``file_name`` appended.

    A destination ending in a separator, or naming an existing folder, is a folder.

    :param destination: a file path, or a folder (existing, or written with a trailing separator).
    :param file_name: the name to use when ``destination`` is a folder (made safe first).
    """
    file_name = safe_file_name(file_name)
    path = as_path(destination)
    if is_remote(destination):
        folder = str(destination).endswith("/")
    else:
        folder = os.fspath(destination).endswith(("/", os.sep))
    if folder or path.is_dir():
        path = path / file_name
    return path


def temporary_sibling(target: Any) -> Any:
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.part"


def is_local(path: Any) -> bool:
    """True for a plain local ``pathlib.Path`` (not an ObjectStoragePath)."""
    # On Airflow 2 (universal-pathlib 0.2) an ObjectStoragePath is a pathlib.Path too; its fs tells.
    return isinstance(path, Path) and not hasattr(path, "fs")


@contextlib.contextmanager
def open_for_write(path: Any) -> Iterator[Any]:
    if is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            yield out
    else:
        with contextlib.suppress(Exception):  # object stores have no folders to create
            path.parent.mkdir(parents=True, exist_ok=True)
        # Object-store writers buffer a whole part in memory (s3fs: 50 MB by default, held two or three
        # times over while a part uploads): parts of WRITE_BLOCK keep a 256 MB upload near 30 MB.
        try:
            handle = path.open("wb", block_size=WRITE_BLOCK)
        except TypeError:  # a filesystem whose open() takes no block_size
            handle = path.open("wb")
        with handle as out:
            yield out


def move_into_place(tmp: Any, target: Any, *, overwrite: bool = True) -> None:
    """Put a finished download in place; without ``overwrite``, never over a file that appeared meanwhile.

    Locally a hard link is the atomic "create only if absent", so of two tasks downloading to one file
    at the same moment exactly one keeps it. Object stores have no such primitive here: the earlier
    existence check is all there is.
    """
    if not is_local(tmp):
        tmp.rename(target)
    elif overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise KlingDownloadError(
                f"{target} already exists (another download finished it first); nothing was replaced: "
                "pass overwrite=True to replace it"
            ) from None
        os.unlink(tmp)


def open_uncommitted(path: Any) -> Any | None:
    """``path`` opened for writing with fsspec's ``autocommit=False``, or None where that is not honoured.

    The object appears only on the handle's ``commit()``; ``discard()`` drops what was written (on S3,
    the multipart upload is aborted). Whether a filesystem honours it is found out, not assumed: a
    probe handle is opened first on a temporary name of our own (some filesystems create or truncate
    a file as soon as it is opened, whatever ``autocommit`` says), and is trusted only when it says
    it is uncommitted, is a buffered fsspec file (which sends nothing before a flush) and its class
    brings its own ``commit`` and ``discard`` (fsspec's base ones do nothing). The probe is dropped
    unsent; only then is ``path`` itself opened.

    :param path: an ObjectStoragePath (anything with ``.fs`` and ``.path``).
    """
    with contextlib.suppress(Exception):  # object stores have no folders to create
        path.parent.mkdir(parents=True, exist_ok=True)
    probe_path = temporary_sibling(path)
    probe = _open_deferred(path.fs, probe_path.path)
    if probe is None:
        return None
    if _defers_commit(probe):
        probe.closed = True  # nothing was sent: leave without the flush a close would make
        return _open_deferred(path.fs, path.path)
    with contextlib.suppress(Exception):
        probe.discard()
    with contextlib.suppress(Exception):
        probe.close()
    remove_quietly(probe_path)
    return None


def _open_deferred(fs: Any, name: str) -> Any | None:
    try:
        return fs.open(name, "wb", autocommit=False, block_size=WRITE_BLOCK)
    except TypeError:  # a filesystem whose open() takes no block_size
        try:
            return fs.open(name, "wb", autocommit=False)
        except TypeError:  # nor autocommit
            return None


def _defers_commit(handle: Any) -> bool:
    from fsspec.spec import AbstractBufferedFile

    cls = type(handle)
    return (
        isinstance(handle, AbstractBufferedFile)
        and handle.autocommit is False
        and cls.commit is not AbstractBufferedFile.commit
        and cls.discard is not AbstractBufferedFile.discard
    )


@contextlib.contextmanager
def write_whole(target: Any, *, overwrite: bool = True) -> Iterator[Any]:
    """A binary handle whose bytes land at ``target`` only if the block ends without an error.

    On a local disk the bytes go to a temporary file beside ``target``, moved into place at the end
    (see :func:`move_into_place` for ``overwrite``). On an object store that honours it, the bytes
    go to ``target``'s own key uncommitted and are committed at the end, or discarded on any error:
    no temporary object, no server-side copy, and a reader never sees a partial object. Other
    object stores keep the temporary object and the move. An error raised in the block (a size
    check, say) leaves nothing behind.

    :param target: a local Path or an ObjectStoragePath.
    :param overwrite: replace a file that appeared meanwhile (locally; an object store has only the
        caller's earlier existence check).
    """
    handle = None if is_local(target) else open_uncommitted(target)
    if handle is None:
        tmp = temporary_sibling(target)
        try:
            with open_for_write(tmp) as out:
                yield out
            move_into_place(tmp, target, overwrite=overwrite)
        except BaseException:
            remove_quietly(tmp)
            raise
        return
    try:
        with handle:  # closing uploads the last part, uncommitted
            yield handle
        handle.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            handle.discard()
        raise


def remove_quietly(path: Any) -> None:
    with contextlib.suppress(Exception):
        if path.exists():
            path.unlink()


def refuse_existing_file(download_to: Any) -> None:
    """Refuse, before anything is paid, a ``download_to`` that names a file already there.

    A folder destination gets a name only once the generation exists, so only a file is checked.

    :param download_to: the task's destination (a file or a folder; local or object storage).
    :raises KlingValidationError: the file exists (set ``overwrite=True`` or name another file).
    """
    from airflow_provider_kling.exceptions import KlingValidationError

    probe = "kling-destination-probe.mp4"
    target = resolve_destination(download_to, probe)
    if target.name != probe and target.exists():
        message = f"{target} already exists; set overwrite=True to replace it, or name another file"
        raise KlingValidationError([("download_to", message)])


__all__ = [
    "WRITE_BLOCK",
    "as_path",
    "durable_sibling",
    "is_local",
    "is_remote",
    "move_into_place",
    "open_for_write",
    "open_uncommitted",
    "refuse_existing_file",
    "remove_quietly",
    "resolve_destination",
    "safe_file_name",
    "temporary_sibling",
    "write_whole",
]


def write_atomic(path: Any, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole or not at all: a failed write leaves the old content.

    On a local disk: a temporary file beside it, flushed and fsynced, renamed into place (parents are
    made). On object storage (an ObjectStoragePath): one PUT of the whole body (fsspec ``pipe_file``),
    never a streamed file whose close would store what was written before an error.
    """
    if hasattr(path, "fs"):
        path.fs.pipe_file(path.path, data)
        return
    temporary = durable_sibling(path, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def durable_sibling(path: Any, data: bytes) -> Any:
    """A hidden temporary file beside local ``path`` holding ``data``, flushed and fsynced (parents are
    made): what an atomic rename or link puts into place. The caller removes it if that fails.

    :param path: the local file the data is meant for.
    :param data: the whole content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def fsync_folder(folder: Any) -> None:
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
