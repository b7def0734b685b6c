"""A request's image inputs: where they sit in its fields, and file references made fetchable.

:func:`resolve_file_inputs` runs after validation, when the task executes: every image input that
names a file (a local path or an object-storage URL) becomes a presigned URL or a Base64 data URI,
and the request keeps what identifies each object for its fingerprint. It needs the request
(:mod:`~airflow_provider_kling.schemas.request`) and the single-input helpers
(:mod:`~airflow_provider_kling.schemas.media`), which need neither it nor each other's request side.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_kling import catalog
from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.schemas.media import (
    PRESIGN_SECONDS,
    _stored_identity,
    is_file_reference,
    presign_image,
    read_image_file,
)
from airflow_provider_kling.schemas.request import KlingRequest


def _image_slots(fields: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every (label, container, key) of an image input in ``fields``: top level, lists and nested."""
    slots: list[tuple[str, Any, Any]] = []
    for name, value in fields.items():
        spec = catalog.FIELDS.get(name, {})
        kind = spec.get("type")
        if kind == "image" or (kind == "image_or_pair" and isinstance(value, str)):
            slots.append((name, fields, name))
        elif kind in ("images", "image_or_pair") and isinstance(value, list):
            slots.extend((f"{name}.{i}", value, i) for i in range(len(value)))
        elif kind == "dynamic_masks":
            slots.extend((f"{name}.{i}.mask", m, "mask") for i, m in enumerate(value))
        elif kind == "elements":
            for i, element in enumerate(value):
                refs = element.get("reference_image_urls", [])
                slots.extend((f"{name}.{i}.reference_image_urls.{j}", refs, j) for j in range(len(refs)))
                if element.get("frontal_image_url"):
                    slots.append((f"{name}.{i}.frontal_image_url", element, "frontal_image_url"))
    return slots


def resolve_file_inputs(
    request: KlingRequest, log: Any = None, *, presign: bool = True, presign_seconds: int = PRESIGN_SECONDS
) -> KlingRequest:
    """Turn every image input that names a file into something the service can fetch.

    An object in ``s3://`` or ``gs://`` storage becomes a presigned GET URL valid ``presign_seconds``
    (the storage's own signer, through the Airflow connection of its ObjectStoragePath), when
    ``presign`` is True and the storage can sign; any other file, or one that cannot be signed, is read
    and sent as a Base64 data URI (the service's Base64 support). Presigned URLs are masked in logs.

    The request's fingerprint counts an input by what it is, never by how it was sent: an object whose
    store tags its version (ETag, generation) as the object and that version, whether presigned or
    sent as its bytes; any other file by its bytes. So a retry whose signing fails (or succeeds) where
    the first try's did not is the same request, and pays nothing again.

    :param request: a validated request.
    :param log: a logger told how many files were sent and how.
    :param presign: False to always send a file's bytes, never a presigned URL.
    :param presign_seconds: how long a presigned URL stays valid.
    :return: the request with its file inputs replaced (the same request when it names no file).
    :raises KlingValidationError: a file that is missing, too large or not a PNG/JPEG; nothing was sent.
    """
    fields = json.loads(json.dumps(request.fields))  # a deep copy; the request stays as validated
    identities: list[tuple[str, str]] = []  # (slot, what identifies its input) where not the value sent
    errors: list[tuple[str, str]] = []
    read = signed = 0
    for label, container, key in _image_slots(fields):
        value = container[key]
        if not isinstance(value, str) or not is_file_reference(value):
            continue
        top = label.split(".")[0]
        spec_name = "image_url" if top in ("elements", "image_list") else top
        spec_name = "static_mask" if top == "dynamic_masks" else spec_name
        limit = catalog.field_spec(request.model, spec_name).get("max_bytes", 10 * catalog.MB)
        try:
            found = presign_image(value, limit, presign_seconds) if presign else None
            if found is not None:
                url, identity = found
                # A store that tags no version: the bytes identify the object, as when they are sent.
                identities.append((label, identity or read_image_file(value, limit)))
                container[key] = url
                signed += 1
                continue
            container[key] = read_image_file(value, limit)
            identity = _stored_identity(value)
            if identity is not None:
                identities.append((label, identity))
            read += 1
        except ValueError as exc:
            errors.append((".".join(request.renamed.get(p, p) for p in label.split(".")), str(exc)))
    if errors:
        raise KlingValidationError(errors)
    stable: dict[str, Any] | None = None
    if identities:
        stable = json.loads(json.dumps(fields))
        for label, identity in identities:
            _set_slot(stable, label, identity)
    if log is not None and (read or signed):
        if signed:
            log.info(
                "Sent %s image file(s) as presigned URLs valid %s s (masked in logs)", signed, presign_seconds
            )
        if read:
            log.info("Read %s image file(s) and sent them as Base64 data URIs", read)
    return request.with_fields(fields, stable) if (read or signed) else request


def _set_slot(fields: dict[str, Any], label: str, value: Any) -> None:
    """Set the image slot ``label`` (``image_url``, ``image_list.1``, ``elements.0.frontal_image_url``)."""
    parts = label.split(".")
    node: Any = fields
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
