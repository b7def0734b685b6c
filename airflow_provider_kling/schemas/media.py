"""One media input of a request: its checks, and reading or presigning the file it names.

What an image, audio or video field accepts (an http(s) URL, a Base64 data URI, or for images a file
path or an object-storage URL), the pydantic validator the request types use for it, the size limit
of an input, reading a file into a data URI, presigning a private object, and what identifies one
version of a stored object (the part of a request's fingerprint an object counts for).
Nothing here knows the request: :mod:`airflow_provider_kling.schemas.file_inputs` walks a request's
image slots with these.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator

#: URL schemes read as files (through fsspec / ObjectStoragePath) and sent as Base64 data URIs.
STORAGE_SCHEMES = ("file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "hdfs", "oss", "memory")
_DATA_URI_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)
_IMAGE_MAGIC = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",)}


def check_http_url(value: str) -> str:
    """Return ``value`` when it is an absolute http(s) URL with a host, else raise ValueError.

    :param value: the URL as text (surrounding whitespace is dropped).
    """
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
    return value.strip()


# ------------------------------------------------------------------------------------ media inputs
def image_mime(data: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` from the first bytes, None for anything else.

    :param data: the file's first bytes (16 are enough).
    """
    for mime, magics in _IMAGE_MAGIC.items():
        if data.startswith(magics):
            return mime
    return None


def is_file_reference(value: str) -> bool:
    """True when an image field's value names a file to read rather than a URL the service fetches.

    :param value: an image field's value (a URL, a data URI, a path or an object-storage URL).
    """
    scheme = urlsplit(value).scheme.lower()
    return scheme in STORAGE_SCHEMES or (scheme == "" and not value.startswith("data:"))


def _check_data_uri(value: str, kind: str, max_bytes: int | None) -> None:
    match = _DATA_URI_RE.match(value)
    if not match:
        raise ValueError(f"is not a Base64 data URI (data:{kind}/...;base64,...)")
    mime = match["mime"].lower()
    if not mime.startswith(f"{kind}/"):
        raise ValueError(f"is a data URI of type {mime}, not an {kind}")
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is a data URI whose Base64 payload does not decode") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"is {len(data)} bytes; this model takes at most {max_bytes} bytes")
    if kind == "image":
        found = image_mime(data)
        if found is None:
            raise ValueError("is a data URI whose bytes are neither a PNG nor a JPEG image")


def _media_validator(kind: str, max_bytes: int | None, formats: tuple[str, ...] = ()) -> Any:
    """A validator for an image/audio/video input: URL, Base64 data URI, or (images) a file."""

    def check(value: Any) -> str:
        if hasattr(value, "fs") or isinstance(value, os.PathLike):
            value = str(value)  # an ObjectStoragePath or a local Path
        if not isinstance(value, str):
            raise ValueError(f"must be a URL or a file path as text, got {type(value).__name__}")
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        scheme = urlsplit(value).scheme.lower()
        if scheme in ("http", "https"):
            check_http_url(value)
            ext = Path(urlsplit(value).path).suffix.lower().lstrip(".")
            if formats and ext and ext not in formats:
                raise ValueError(f"must be one of {', '.join(formats)} (the URL ends in .{ext})")
            return value
        if scheme == "data":
            _check_data_uri(value, kind, max_bytes)
            return value
        if kind != "image":
            raise ValueError(f"must be an absolute http(s) URL or a Base64 data URI, got {value!r}")
        if not is_file_reference(value):
            raise ValueError(
                f"must be an http(s) URL, a Base64 data URI, a file path or an object-storage URL "
                f"({', '.join(s + '://' for s in STORAGE_SCHEMES[:4])}...), got {value!r}"
            )
        if scheme in ("", "file"):
            path = Path(value.removeprefix("file://")).expanduser()
            if not path.is_file():
                raise ValueError(
                    f"names the local file {str(path)!r}, which does not exist (an http(s) URL, a data URI "
                    "or an object-storage URL is also accepted)"
                )
        return value

    return AfterValidator(check) if kind != "image" else BeforeValidator(check)


# ------------------------------------------------------------------------------------ file inputs
def _open_input(ref: str) -> Any:
    if urlsplit(ref).scheme.lower() in ("", "file"):
        return Path(ref.removeprefix("file://")).expanduser()
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return ObjectStoragePath(ref)


def read_image_file(ref: str, max_bytes: int) -> str:
    """Read an image file (local or object storage) into a data URI, checking its size and type.

    The size is read from the file's metadata first and the read stops one byte past the limit, so
    an oversized file is refused without being loaded.

    :param ref: a local path, a ``file://`` URL or an object-storage URL.
    :param max_bytes: the model's limit for this input.
    :raises ValueError: the file is missing, unreadable, too large or not a PNG/JPEG.
    """
    path = _open_input(ref)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ValueError(f"names {ref!r}, which does not exist") from None
    except Exception as exc:
        raise ValueError(f"names {ref!r}, which could not be read: {type(exc).__name__}: {exc}") from None
    if size is not None and size > max_bytes:
        raise ValueError(f"is a file of {size} bytes; this model takes images of at most {max_bytes} bytes")
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"is a file of more than {max_bytes} bytes; this model takes at most {max_bytes}")
    mime = image_mime(data)
    if mime is None:
        raise ValueError(f"names {ref!r}, which is neither a PNG nor a JPEG image (by its first bytes)")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


#: Schemes whose objects can be handed to the service as a presigned GET URL instead of their bytes.
PRESIGN_SCHEMES = ("s3", "s3a", "gs", "gcs")
#: How long a presigned input URL stays valid (seconds): long enough for the service to fetch it.
PRESIGN_SECONDS = 900


def _object_version(info: dict[str, Any]) -> str | None:
    """What identifies one version of an object in its store's metadata (ETag, generation, ...).

    None when the metadata holds no such tag (a size and a time are not enough): the object is then
    identified by its bytes.
    """
    for key in ("ETag", "etag", "md5Hash", "crc32c", "generation", "VersionId"):
        if info.get(key):
            return f"{key}={str(info[key]).strip(chr(34))}"
    return None


def _stored_identity(ref: str) -> str | None:
    """``"<ref>#<version>"`` for an object in storage whose metadata tags its version, else None.

    What a request's fingerprint counts for the input, whether it is sent presigned or as its bytes.
    """
    if urlsplit(ref).scheme.lower() in ("", "file"):
        return None
    path = _open_input(ref)
    try:
        info = path.fs.info(path.path)
    except FileNotFoundError:
        raise ValueError(f"names {ref!r}, which does not exist") from None
    except Exception as exc:
        raise ValueError(f"names {ref!r}, which could not be read: {type(exc).__name__}: {exc}") from None
    version = _object_version(info) if isinstance(info, dict) else None
    return f"{ref}#{version}" if version else None


def presign_object(
    ref: str, max_bytes: int | None = None, expires: int = PRESIGN_SECONDS, *, mask: bool = True
) -> tuple[str, str | None] | None:
    """A presigned GET URL for a private object in storage (image, video or audio), and its version.

    One metadata call checks that the object exists and is within ``max_bytes``; nothing is downloaded.
    The URL is registered with Airflow's secrets masker, so it never shows in a log.

    :param ref: an object-storage URL (``s3://``, ``gs://``...); any other scheme returns None.
    :param max_bytes: the model's limit for this input (None: no limit).
    :param expires: how long the URL stays valid, in seconds.
    :param mask: False to leave the URL out of Airflow's secrets masker.
    :return: ``(url, "<ref>#<version>")`` (the version None when the store tags none: the object is
        then identified by its bytes), or None when this storage cannot sign (no signer, no
        credentials that can sign).
    :raises ValueError: the object is missing or too large.
    """
    found = _sign(ref, max_bytes, expires)
    if found is None:
        return None
    url, info, _fs, _key = found
    if mask:
        from airflow.providers.common.compat.sdk import mask_secret

        mask_secret(url)
    version = _object_version(info)
    return url, f"{ref}#{version}" if version else None


def _sign(
    ref: str, max_bytes: int | None, expires: int, noun: str = "files"
) -> tuple[str, dict[str, Any], Any, str] | None:
    """(url, metadata, filesystem, key) of a signed GET for ``ref``; None when it cannot be signed."""
    if urlsplit(ref).scheme.lower() not in PRESIGN_SCHEMES:
        return None
    path = _open_input(ref)
    try:
        fs = path.fs
        key = path.path
        info = fs.info(key)
    except FileNotFoundError:
        raise ValueError(f"names {ref!r}, which does not exist") from None
    except Exception as exc:
        raise ValueError(f"names {ref!r}, which could not be read: {type(exc).__name__}: {exc}") from None
    size = info.get("size")
    if max_bytes is not None and isinstance(size, int) and size > max_bytes:
        raise ValueError(f"is a file of {size} bytes; this model takes {noun} of at most {max_bytes} bytes")
    try:
        url = fs.sign(key, expiration=int(expires))
    except Exception:  # NotImplementedError, or credentials that cannot sign
        return None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return None
    return url, info, fs, key


def presign_image(
    ref: str, max_bytes: int, expires: int = PRESIGN_SECONDS, *, mask: bool = True
) -> tuple[str, str | None] | None:
    """A presigned GET URL for a private image in object storage, and what identifies its version.

    The object is checked first (it exists, its size is within ``max_bytes``, its first bytes are a PNG
    or JPEG), with one metadata call and one ranged read of 16 bytes: nothing else is downloaded.
    The URL is registered with Airflow's secrets masker, so it never shows in a log.

    :param ref: an object-storage URL (``s3://``, ``gs://``...); any other scheme returns None.
    :param max_bytes: the model's limit for this input.
    :param expires: how long the URL stays valid, in seconds.
    :param mask: False to leave the URL out of Airflow's secrets masker.
    :return: ``(url, "<ref>#<version>")`` (the version None when the store tags none: the object is
        then identified by its bytes), or None when this storage cannot sign (no signer, no
        credentials that can sign): the caller then sends the bytes as Base64.
    :raises ValueError: the object is missing, too large or not a PNG/JPEG.
    """
    found = _sign(ref, max_bytes, expires, "images")
    if found is None:
        return None
    url, info, fs, key = found
    try:
        head = fs.cat_file(key, start=0, end=16)
    except Exception as exc:
        raise ValueError(f"names {ref!r}, which could not be read: {type(exc).__name__}: {exc}") from None
    if image_mime(head) is None:
        raise ValueError(f"names {ref!r}, which is neither a PNG nor a JPEG image (by its first bytes)")
    if mask:
        from airflow.providers.common.compat.sdk import mask_secret

        mask_secret(url)
    version = _object_version(info)
    return url, f"{ref}#{version}" if version else None
