"""Typed requests and results of the Kling video API.

A request is validated by a pydantic model built from the catalog entry of its Kling model
(:mod:`airflow_provider_kling.catalog`) the first time that model is used, before anything is sent:
a bad value fails the task with an error naming the field and what is allowed, and nothing is paid.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    StringConstraints,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from airflow_provider_kling import catalog
from airflow_provider_kling.exceptions import KlingValidationError, redact_urls

#: URL schemes read as files (through fsspec / ObjectStoragePath) and sent as Base64 data URIs.
STORAGE_SCHEMES = ("file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "hdfs", "oss", "memory")
_DATA_URI_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)
_IMAGE_MAGIC = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",)}


def check_http_url(value: str) -> str:
    """Return ``value`` when it is an absolute http(s) URL with a host, else raise ValueError."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
    return value.strip()


class _FieldError(ValueError):
    """A cross-field rule broken, reported under the field that has to change."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


# ------------------------------------------------------------------------------------ media inputs
def image_mime(data: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` from the first bytes, None for anything else."""
    for mime, magics in _IMAGE_MAGIC.items():
        if data.startswith(magics):
            return mime
    return None


def is_file_reference(value: str) -> bool:
    """True when an image field's value names a file to read rather than a URL the service fetches."""
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


# ------------------------------------------------------------------------------------ nested shapes
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class TrajectoryPoint(_Strict):
    """One point of a motion-brush trajectory, in pixels, origin at the image's bottom-left."""

    x: Annotated[int, Field(ge=0, strict=True)]
    y: Annotated[int, Field(ge=0, strict=True)]


_Axis = Annotated[float, Field(ge=-10, le=10, strict=False)]


class CameraConfig(_Strict):
    """How far the camera moves on each axis, -10 to 10."""

    horizontal: _Axis | None = None
    vertical: _Axis | None = None
    pan: _Axis | None = None
    tilt: _Axis | None = None
    roll: _Axis | None = None
    zoom: _Axis | None = None


class CameraControl(_Strict):
    """A camera move: a preset ``type``, or ``simple`` with exactly one axis set in ``config``."""

    type: Literal[catalog.CAMERA_TYPES]  # type: ignore[valid-type]
    config: CameraConfig | None = None

    @model_validator(mode="after")
    def _simple_has_one_axis(self) -> CameraControl:
        moving = [k for k, v in (self.config.model_dump() if self.config else {}).items() if v]
        if self.type == "simple" and len(moving) != 1:
            raise ValueError(
                "type 'simple' needs config with exactly one non-zero axis of "
                f"{', '.join(catalog.CAMERA_AXES)} (got {moving or 'none'})"
            )
        if self.type != "simple" and self.config is not None:
            raise ValueError(f"type {self.type!r} is a preset and takes no config (only 'simple' does)")
        return self


class AdvancedCameraControl(_Strict):
    """One camera movement for text-to-video: an axis and a whole value from -10 to 10."""

    movement_type: Literal[catalog.CAMERA_AXES]  # type: ignore[valid-type]
    movement_value: Annotated[int, Field(ge=-10, le=10, strict=True)]


def _no_bool(low: float, high: float) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be a number from {low:g} to {high:g}, got a boolean")
        return value

    return BeforeValidator(check)


def _whole_seconds(allowed: str) -> Any:
    """Accept 5, "5" or 5.0 (users and templates write any of them); name what is allowed otherwise."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number of seconds: {allowed}; got {value!r}")
        return value

    return BeforeValidator(check)


# ------------------------------------------------------------------------------------ type builder
def _text(spec: dict[str, Any]) -> Any:
    return Annotated[
        StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=spec.get("max_length"))
    ]


def _image(spec: dict[str, Any]) -> Any:
    return Annotated[str, _media_validator("image", spec.get("max_bytes"))]


def _duration(spec: dict[str, Any]) -> Any:
    if "range" in spec:
        low, high = spec["range"]

        def in_range(value: int) -> int:
            if not low <= value <= high:
                raise ValueError(f"must be a whole number of seconds from {low} to {high}, got {value}")
            return value

        return Annotated[
            int, _whole_seconds(f"{low} to {high}"), Field(strict=True), AfterValidator(in_range)
        ]
    choices = tuple(spec["choices"])

    def one_of(value: int) -> int:
        if value not in choices:
            allowed = " or ".join(str(c) for c in choices)
            raise ValueError(f"must be {allowed} seconds on this model, got {value}")
        return value

    allowed = " or ".join(str(c) for c in choices)
    return Annotated[int, _whole_seconds(allowed), Field(strict=True), AfterValidator(one_of)]


def _field_type(name: str, spec: dict[str, Any]) -> Any:
    kind = spec["type"]
    if kind == "text":
        return _text(spec)
    if kind == "image":
        return _image(spec)
    if kind == "image_or_pair":
        one = _image(spec)
        pair = Annotated[list[one], Field(min_length=2, max_length=2)]  # type: ignore[valid-type]
        return Union[one, pair]  # type: ignore[valid-type]  # noqa: UP007
    if kind == "images":
        return Annotated[
            list[_image(spec)], Field(min_length=spec["min_items"], max_length=spec["max_items"])  # type: ignore[misc]
        ]
    if kind in ("audio", "video"):
        return Annotated[StrictStr, _media_validator(kind, spec.get("max_bytes"), spec.get("formats", ()))]
    if kind == "duration":
        return _duration(spec)
    if kind == "number":
        return Annotated[float, _no_bool(spec["ge"], spec["le"]), Field(ge=spec["ge"], le=spec["le"])]
    if kind == "bool":
        return StrictBool
    if kind in ("choice", "camera_preset"):
        return Literal[tuple(spec["choices"])]  # type: ignore[valid-type]
    if kind == "camera_object":
        return CameraControl
    if kind == "advanced_camera":
        return AdvancedCameraControl
    if kind == "dynamic_masks":
        mask = create_model(
            "DynamicMask",
            __base__=_Strict,
            mask=(_image(catalog.FIELDS["static_mask"]), ...),
            trajectories=(  # type: ignore[arg-type]
                Annotated[  # type: ignore[maybe-unrecognized-str-typeform]
                    list[TrajectoryPoint], Field(min_length=spec["min_points"], max_length=spec["max_points"])
                ],
                ...,
            ),
        )
        return Annotated[list[mask], Field(min_length=1, max_length=spec["max_items"])]  # type: ignore[valid-type]
    if kind == "multi_prompt":
        text = _text(catalog.FIELDS["prompt"])
        item: Any = text
        if spec["item"] == "shot":
            item = create_model(
                "Shot",
                __base__=_Strict,
                prompt=(text, ...),
                duration=(_duration({"range": (1, 15)}), ...),
            )
        return Annotated[list[item], Field(min_length=spec["min_items"], max_length=spec["max_items"])]
    if kind == "elements":
        image = _image(catalog.FIELDS["image_url"])
        element = create_model(  # type: ignore[call-overload]
            "Element",
            __base__=_Strict,
            reference_image_urls=(
                Annotated[list[image], Field(min_length=1, max_length=spec["max_references"])],  # type: ignore[valid-type]
                ...,
            ),
            frontal_image_url=(image, ...) if spec["frontal_required"] else (image | None, None),
            **(
                {"video_url": (Annotated[StrictStr, _media_validator("video", None)] | None, None)}
                if spec["video"]
                else {}
            ),
        )
        return Annotated[list[element], Field(min_length=1, max_length=spec["max_items"])]  # type: ignore[valid-type]
    raise AssertionError(f"catalog field {name!r} has unknown type {kind!r}")  # pragma: no cover


# ------------------------------------------------------------------------------------ rules
def _set(values: dict[str, Any], name: str) -> bool:
    return values.get(name) not in (None, [], "")


def _rule_exclusive_tail_masks_camera(model: str, v: dict[str, Any]) -> None:
    groups = [
        name
        for name, present in (
            ("tail_image_url", _set(v, "tail_image_url")),
            ("static_mask/dynamic_masks", _set(v, "static_mask") or _set(v, "dynamic_masks")),
            ("camera_control", _set(v, "camera_control")),
        )
        if present
    ]
    if len(groups) > 1:
        named = groups[1]
        if named == "static_mask/dynamic_masks":
            named = "dynamic_masks" if _set(v, "dynamic_masks") else "static_mask"
        raise _FieldError(
            named,
            f"cannot be combined with {groups[0]}: Kling takes one of tail image, masks and camera control",
        )


def _rule_prompt_or_multi_prompt(model: str, v: dict[str, Any]) -> None:
    if _set(v, "prompt") and _set(v, "multi_prompt"):
        raise _FieldError("multi_prompt", "cannot be combined with prompt: give one of them")
    if not _set(v, "prompt") and not _set(v, "multi_prompt"):
        raise _FieldError("prompt", f"is required by model {model!r} (or give multi_prompt instead)")


def _rule_tail_needs_no_audio(model: str, v: dict[str, Any]) -> None:
    if _set(v, "tail_image_url") and v.get("generate_audio") is not False:
        raise _FieldError(
            "tail_image_url",
            f"needs generate_audio=False on model {model!r}: the service refuses a tail image with audio, "
            "and generate_audio defaults to true",
        )


def _rule_effect_image_count(model: str, v: dict[str, Any]) -> None:
    pair = isinstance(v.get("image_url"), list)
    scene = v.get("effect_scene")
    if scene in catalog.TWO_IMAGE_EFFECTS and not pair:
        raise _FieldError("image_url", f"must be a list of 2 image URLs for effect_scene {scene!r}")
    if scene in catalog.ONE_IMAGE_EFFECTS and pair:
        raise _FieldError(
            "image_url",
            f"must be one image for effect_scene {scene!r}; two images only for "
            f"{', '.join(catalog.TWO_IMAGE_EFFECTS)}",
        )


_RULES = {
    "exclusive_tail_masks_camera": _rule_exclusive_tail_masks_camera,
    "prompt_or_multi_prompt": _rule_prompt_or_multi_prompt,
    "tail_needs_no_audio": _rule_tail_needs_no_audio,
    "effect_image_count": _rule_effect_image_count,
}


@cache
def request_model(model_id: str, *, strict: bool = True) -> type[BaseModel]:
    """The pydantic model of ``model_id``'s request body, generated from its catalog entry (cached).

    :param model_id: a model id of the catalog.
    :param strict: False for the lenient form used with ``check_capabilities=False``: every field the
        catalog knows is type-checked, none is required, unknown fields pass, and no rule applies.
    """
    entry = catalog.model_entry(model_id)
    assert entry is not None
    required = set(entry.get("required", ()))
    names = catalog.model_fields(model_id) if strict else tuple(catalog.FIELDS)
    fields: dict[str, Any] = {}
    for name in names:
        spec = catalog.field_spec(model_id, name)
        # Lenient: type-check text, media, numbers and flags; pass choices and shapes as given.
        lenient_any = not strict and spec["type"] not in ("text", "image", "audio", "video", "number", "bool")
        annotation = Any if lenient_any else _field_type(name, spec)
        if strict and name in required:
            fields[name] = (annotation, ...)
        else:
            fields[name] = (annotation | None, None)
    rules = [_RULES[rule] for rule in entry.get("rules", ())] if strict else []

    def apply_rules(self: BaseModel) -> BaseModel:
        values = {name: getattr(self, name) for name in type(self).model_fields}
        for rule in rules:
            rule(model_id, values)
        return self

    return create_model(  # type: ignore[call-overload,no-any-return]
        "KlingRequestBody",
        __config__=ConfigDict(extra="forbid" if strict else "allow", str_strip_whitespace=True),
        __validators__={"_rules": model_validator(mode="after")(apply_rules)},  # type: ignore[dict-item]
        **fields,
    )


# ------------------------------------------------------------------------------------ request
@dataclass(frozen=True)
class KlingRequest:
    """A validated generation request: the model, its checked fields and what passed unchecked.

    :param model: the Kling model id.
    :param fields: the checked fields under their current names (``static_mask``, ``mask``, int duration).
    :param passthrough: fields sent as given, unchecked (``check_capabilities=False`` only).
    :param kind: the model's kind from the catalog (None for a model the catalog does not know).
    """

    model: str
    fields: dict[str, Any]
    passthrough: dict[str, Any] = field(default_factory=dict)
    kind: str | None = None
    #: current field name -> the seed-era name the user wrote, so errors name what the user wrote.
    renamed: dict[str, str] = field(default_factory=dict, compare=False)
    #: the fields as they identify the request when some inputs are objects in storage: each replaced
    #: by the object and its version, however it was sent (presigned URL or bytes), so the fingerprint
    #: changes neither with every signature nor with whether signing worked (and changes when the
    #: object does). None: ``fields`` identify it.
    stable_fields: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def seed_names(self) -> bool:
        return bool((catalog.model_entry(self.model) or {}).get("seed_names"))

    def payload(self, api: str = catalog.DEFAULT_ENDPOINT) -> dict[str, Any]:
        """The JSON body to POST on endpoint ``api``: the seed's names for v1 models on the legacy path."""
        body: dict[str, Any] = {"model": self.model, **self.fields}
        if api == "legacy" and self.seed_names:
            for new, old in ((n, s) for s, n in catalog.ALIASES.items()):
                if new in body:
                    body[old] = body.pop(new)
            if "dynamic_masks" in body:
                body["dynamic_masks"] = [
                    {catalog.MASK_SEED_NAME: m["mask"], **{k: v for k, v in m.items() if k != "mask"}}
                    for m in body["dynamic_masks"]
                ]
            if "duration" in body:
                body["duration"] = str(body["duration"])
        body.update(self.passthrough)
        return body

    def fingerprint(self) -> str:
        """A stable hash of what is asked (model and every field): equal requests, equal hashes.

        Objects in storage count as the object and its version (ETag), not as the presigned URL or the
        bytes sent: a re-run that signs again, or cannot sign, has the same fingerprint; a changed
        image a new one.
        """
        source = self if self.stable_fields is None else self.with_fields(self.stable_fields)
        text = json.dumps(source.payload("unified"), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def with_fields(
        self, fields: dict[str, Any], stable_fields: dict[str, Any] | None = None
    ) -> KlingRequest:
        return KlingRequest(self.model, fields, self.passthrough, self.kind, self.renamed, stable_fields)


def _nested_model(annotation: Any, name: str) -> type[BaseModel] | None:
    """The pydantic model that field ``name`` of ``annotation`` holds (through lists, unions, Annotated)."""
    from typing import get_args

    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(name)
            return _innermost_model(info.annotation) if info else None
        stack.extend(get_args(current))
    return None


def _innermost_model(annotation: Any) -> type[BaseModel] | None:
    from typing import get_args

    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            return current
        stack.extend(get_args(current))
    return None


def _allowed_here(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names accepted where the unknown field at ``loc`` was found."""
    current: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, str) and current is not None:
            current = _nested_model(current, part)
    return list(current.model_fields) if current is not None else []


def _format_error(
    error: Any, root: type[BaseModel], model_id: str, renamed: dict[str, str] | None = None
) -> tuple[str, str]:
    loc = tuple(error["loc"])
    # Union members add their type name to the location: keep only the user's path.
    loc = tuple(p for p in loc if isinstance(p, int) or not (p.startswith(("str", "list[")) or "[" in p))
    field_name = ".".join(str((renamed or {}).get(p, p)) for p in loc) or "request"
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        return (renamed or {}).get(cause.field, cause.field), str(cause)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_here(root, loc))
        if len(loc) == 1:
            message = f"is not a field of model {model_id!r}; it takes: {allowed}"
        else:
            message = f"is not a field here; allowed here: {allowed}"
    elif error["type"] not in ("value_error", "missing", "assertion_error") and "input" in error:
        shown = repr(error["input"])
        if len(shown) > 80:  # a 78-point trajectory would otherwise fill the task log
            shown = shown[:77] + "..."
        message = f"{message} (got {shown})"
    return field_name, message


def _model_error(model: Any) -> str | None:
    if not isinstance(model, str) or not model.strip():
        return f"must be a Kling model id as text, got {model!r}"
    return None


def build_request(
    values: KlingRequest | dict[str, Any],
    *,
    check_capabilities: bool | None = None,
    kind: str | None = None,
    log: Any = None,
) -> KlingRequest:
    """Validate ``values`` (``model`` and the body's fields) against the catalog.

    :param values: the request's fields, ``model`` included (``check_capabilities`` may sit here too).
    :param check_capabilities: False lets a model or field the catalog does not know through unchecked.
    :param kind: the kind the calling operator submits; a known model of another kind is refused.
    :param log: a logger told what passed unchecked.
    :raises KlingValidationError: naming every bad field and what is allowed; nothing was sent.
    """
    if isinstance(values, KlingRequest):
        return values
    if not isinstance(values, dict):
        raise KlingValidationError([("request", f"must be a mapping of fields, got {type(values).__name__}")])
    values = {k: v for k, v in values.items() if v is not None}
    flag = values.pop("check_capabilities", True)
    if not isinstance(flag, bool):
        raise KlingValidationError([("check_capabilities", f"must be True or False, got {flag!r}")])
    strict = flag if check_capabilities is None else check_capabilities
    model = values.pop("model", None)
    if model is None:
        raise KlingValidationError([("model", "Field required")])
    if problem := _model_error(model):
        raise KlingValidationError([("model", problem)])
    model = model.strip()
    renamed = _current_names(values)
    entry = catalog.model_entry(model)
    if entry is None:
        if strict:
            raise KlingValidationError(
                [
                    (
                        "model",
                        f"{model!r} is not in this provider's catalog of {len(catalog.MODELS)} Kling models "
                        "(see the README's model table); pass check_capabilities=False to send it anyway",
                    )
                ]
            )
        if log is not None:
            log.warning(
                "Model %s is not in the catalog: sending fields %s unchecked (check_capabilities=False)",
                model,
                ", ".join(sorted(values)) or "(none)",
            )
        return KlingRequest(model, {}, values, None)
    if entry.get("retired") and strict:
        raise KlingValidationError([("model", f"{model!r} is retired: {entry['retired']}")])
    if kind is not None and entry["kind"] != kind and strict:
        operator = catalog.KINDS[entry["kind"]]
        raise KlingValidationError(
            [("model", f"{model!r} is a {entry['kind']} model, not {kind}: use {operator} for it")]
        )
    for name, default in entry.get("defaults", {}).items():
        values.setdefault(name, default)
    for name, reason in entry.get("deprecated", {}).items():
        if name in values:
            warnings.warn(
                f"{name} is deprecated by the Kling API: {reason}", DeprecationWarning, stacklevel=2
            )
    body = request_model(model, strict=strict)
    try:
        checked = body.model_validate(values)
    except ValidationError as exc:
        raise KlingValidationError([_format_error(e, body, model, renamed) for e in exc.errors()]) from None
    fields = checked.model_dump(mode="json", exclude_none=True)
    passthrough = {k: fields.pop(k) for k in list(fields) if k not in body.model_fields}
    if passthrough and log is not None:
        log.warning(
            "Fields %s are not in the catalog for %s: sent unchecked (check_capabilities=False)",
            ", ".join(sorted(passthrough)),
            model,
        )
    return KlingRequest(model, fields, passthrough, entry["kind"], renamed)


def _current_names(values: dict[str, Any]) -> dict[str, str]:
    """Rename the seed's field names to the current ones in place; return current -> the user's name."""
    renamed: dict[str, str] = {}
    errors = []
    for old, new in catalog.ALIASES.items():
        if old in values:
            if new in values:
                errors.append((old, f"is the old name of {new}: give one of them"))
                continue
            values[new] = values.pop(old)
            renamed[new] = old
    masks = values.get("dynamic_masks")
    if isinstance(masks, list):
        masks = values["dynamic_masks"] = list(masks)
        for i, mask in enumerate(masks):
            if isinstance(mask, dict) and catalog.MASK_SEED_NAME in mask:
                if "mask" in mask:
                    errors.append(
                        (f"dynamic_masks.{i}.mask_url", "is the old name of mask: give one of them")
                    )
                    continue
                masks[i] = {("mask" if k == catalog.MASK_SEED_NAME else k): v for k, v in mask.items()}
                renamed["mask"] = catalog.MASK_SEED_NAME
    if errors:
        raise KlingValidationError(errors)
    return renamed


# ------------------------------------------------------------------------------------ file inputs
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


def _open_input(ref: str) -> Any:
    if urlsplit(ref).scheme.lower() in ("", "file"):
        return Path(ref.removeprefix("file://")).expanduser()
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return ObjectStoragePath(ref)


def read_image_file(ref: str, max_bytes: int) -> str:
    """Read an image file (local or object storage) into a data URI, checking its size and type.

    The size is read from the file's metadata first and the read stops one byte past the limit, so
    an oversized file is refused without being loaded.
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


def presign_image(
    ref: str, max_bytes: int, expires: int = PRESIGN_SECONDS, *, mask: bool = True
) -> tuple[str, str | None] | None:
    """A presigned GET URL for a private image in object storage, and what identifies its version.

    The object is checked first (it exists, its size is within ``max_bytes``, its first bytes are a PNG
    or JPEG), with one metadata call and one ranged read of 16 bytes: nothing else is downloaded.
    The URL is registered with Airflow's secrets masker, so it never shows in a log.

    :return: ``(url, "<ref>#<version>")`` (the version None when the store tags none: the object is
        then identified by its bytes), or None when this storage cannot sign (no signer, no
        credentials that can sign): the caller then sends the bytes as Base64.
    :raises ValueError: the object is missing, too large or not a PNG/JPEG.
    """
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
    if isinstance(size, int) and size > max_bytes:
        raise ValueError(f"is a file of {size} bytes; this model takes images of at most {max_bytes} bytes")
    try:
        url = fs.sign(key, expiration=int(expires))
    except Exception:  # NotImplementedError, or credentials that cannot sign: send the bytes instead
        return None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return None
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


# ------------------------------------------------------------------------------------ results
class GenerationStatus(str, enum.Enum):
    """A generation's state, normalised from the service's many status words."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"

    @classmethod
    def from_raw(cls, raw: Any) -> GenerationStatus:
        word = str(raw if raw is not None else "").strip().lower()
        if word in ("completed", "succeeded", "succeed", "success", "done"):
            return cls.COMPLETED
        if word in ("error", "failed", "failure"):
            return cls.FAILED
        # queued, generating, waiting, active, processing, submitted and anything new: keep waiting.
        return cls.PENDING


def error_message(error: Any) -> str | None:
    """A readable message from either error shape the service uses (or None when there is none)."""
    if error is None or error == {} or error == "":
        return None
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        detail = error.get("detail")
        if isinstance(detail, list) and detail:
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = item.get("loc")
                    where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
                    msg = str(item.get("msg", item))
                    parts.append(f"{where}: {msg}" if where else msg)
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        if isinstance(detail, str):
            return detail
        message = error.get("message")
        name = error.get("name")
        if message:
            return f"{name}: {message}" if name else str(message)
        if name:
            return str(name)
    return str(error)


def _text_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def usable_video_url(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL with a host, else None.

    Video URLs come from the service and end up as links (XCom, the extra link, the gallery) and as
    download sources: a ``javascript:``, ``data:`` or ``file:`` URL, or one with whitespace or control
    characters (which browsers drop, reviving such a scheme), is no usable URL.
    """
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return url


def _video_urls(video: Any) -> list[str]:
    """Every usable URL of a ``video`` answer: an object, a list of objects (v3 omni) or a bare URL."""
    items = video if isinstance(video, list) else [video]
    urls = []
    for item in items:
        url = usable_video_url(item.get("url") if isinstance(item, dict) else item)
        if url is not None:
            urls.append(url)
    return urls


class Generation(BaseModel):
    """One poll's (or the submit answer's) view of a generation.

    :param id: the generation id.
    :param status: the normalised state.
    :param raw_status: the service's own word.
    :param video_url: signed URL of the (first) video once completed (it expires: download promptly);
        only an http(s) URL: any other scheme the service answers is dropped (None).
    :param video_urls: every video URL, when the service answered a list (v3 omni).
    :param file_name: the video's file name as the service names it.
    :param file_size: the video's size in bytes, when given.
    :param error: the service's readable reason when failed (URLs in it without their query string).
    :param usage: the ``meta.usage`` block (tokens_used, credits_used, usd_spent).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: GenerationStatus
    raw_status: str | None = None
    video_url: str | None = None
    video_urls: list[str] = Field(default_factory=list)
    file_name: str | None = None
    file_size: int | None = None
    content_type: str | None = None
    duration: float | None = None
    error: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict)

    @field_validator("video_url", mode="before")
    @classmethod
    def _http_video_url(cls, value: Any) -> str | None:
        return None if value is None else usable_video_url(value)

    @field_validator("video_urls", mode="before")
    @classmethod
    def _http_video_urls(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [url for url in map(usable_video_url, value) if url is not None]
        return value

    @field_validator("error", mode="after")
    @classmethod
    def _no_signed_urls_in_error(cls, value: str | None) -> str | None:
        # The service may echo a presigned input URL in its reason; the reason reaches logs and XComs.
        return None if value is None else redact_urls(value)

    @classmethod
    def from_api(cls, body: dict[str, Any], generation_id: str | None = None) -> Generation:
        """Read an answer; missing, null or oddly typed parts are tolerated (coerced or dropped)."""
        raw_video = body.get("video")
        urls = _video_urls(raw_video)
        first = raw_video[0] if isinstance(raw_video, list) and raw_video else raw_video
        video = first if isinstance(first, dict) else {}
        meta = body.get("meta")
        usage = meta.get("usage") if isinstance(meta, dict) else None
        raw = body.get("status")
        status = GenerationStatus.from_raw(raw)
        message = error_message(body.get("error"))
        if status is GenerationStatus.FAILED and not message:
            message = f"the service ended the generation with status {raw!r} and no message"
        size = _number_or_none(video.get("file_size"))
        found_id = body.get("id") or body.get("generation_id") or generation_id or ""
        return cls(
            id=str(found_id) if not isinstance(found_id, (dict, list)) else str(generation_id or ""),
            status=status,
            raw_status=None if raw is None else str(raw),
            video_url=urls[0] if urls else None,
            video_urls=urls,
            file_name=_text_or_none(video.get("file_name")),
            file_size=int(size) if size is not None and size >= 0 and size.is_integer() else None,
            content_type=_text_or_none(video.get("content_type")),
            duration=_number_or_none(video.get("duration")),
            error=message,
            usage=usage if isinstance(usage, dict) else {},
        )

    @property
    def is_terminal(self) -> bool:
        return self.status is not GenerationStatus.PENDING
