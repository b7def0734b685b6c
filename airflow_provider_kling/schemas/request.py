"""Typed requests of the Kling video API: field types, cross-field rules, the request and its builder.

A request is validated by a pydantic model built from the catalog entry of its Kling model
(:mod:`airflow_provider_kling.catalog`) the first time that model is used, before anything is sent:
a bad value fails the task with an error naming the field and what is allowed, and nothing is paid.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal, Union

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
    model_validator,
)

from airflow_provider_kling import catalog
from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.schemas.media import _media_validator


class _FieldError(ValueError):
    """A cross-field rule broken, reported under the field that has to change."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


# ------------------------------------------------------------------------------------ nested shapes
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class TrajectoryPoint(_Strict):
    """One point of a motion-brush trajectory, in pixels, origin at the image's bottom-left.

    :param x: pixels from the left edge.
    :param y: pixels from the bottom edge.
    """

    x: Annotated[int, Field(ge=0, strict=True)]
    y: Annotated[int, Field(ge=0, strict=True)]


_Axis = Annotated[float, Field(ge=-10, le=10, strict=False)]


class CameraConfig(_Strict):
    """How far the camera moves on each axis, -10 to 10.

    :param horizontal: the move on the horizontal axis.
    :param vertical: the move on the vertical axis.
    :param pan: the pan.
    :param tilt: the tilt.
    :param roll: the roll.
    :param zoom: the zoom.
    """

    horizontal: _Axis | None = None
    vertical: _Axis | None = None
    pan: _Axis | None = None
    tilt: _Axis | None = None
    roll: _Axis | None = None
    zoom: _Axis | None = None


class CameraControl(_Strict):
    """A camera move: a preset ``type``, or ``simple`` with exactly one axis set in ``config``.

    :param type: one of the catalog's ``CAMERA_TYPES``: ``simple`` or a preset.
    :param config: the one axis to move, for ``simple`` only.
    """

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
    """One camera movement for text-to-video: an axis and a whole value from -10 to 10.

    :param movement_type: an axis of the catalog's ``CAMERA_AXES``.
    :param movement_value: how far, a whole number from -10 to 10.
    """

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
