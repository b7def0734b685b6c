"""The service's light body validation, driven by :mod:`airflow_provider_kling.catalog`.

:func:`validate_body` answers what the service would say about a POST body (a retired model, an
unknown or missing field, a wrong type or duration), in the service's own (zod) wording.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_kling import catalog

#: Models the catalog offers today (retired ones answer 400; ids the catalog does not know pass).
KNOWN_MODELS: tuple[str, ...] = tuple(catalog.current_models())
#: Seed durations (legacy endpoint, models with ``seed_names``).
DURATIONS = ("5", "10")


def _zod_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _string_error(name: str, value: Any) -> str | None:
    if isinstance(value, str):
        return None
    return f"{name}: Expected string, received {_zod_type(value)}"


def _number_error(name: str, value: Any, spec: Mapping[str, Any]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name}: Expected number, received {_zod_type(value)}"
    if "ge" in spec and value < spec["ge"]:
        return f"{name}: Number must be greater than or equal to {spec['ge']:g}"
    if "le" in spec and value > spec["le"]:
        return f"{name}: Number must be less than or equal to {spec['le']:g}"
    return None


def _duration_error(value: Any, spec: Mapping[str, Any], seed: bool) -> str | None:
    if seed:
        # The seed's schema: a string "5" or "10" (an integer has always been accepted too).
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) not in DURATIONS:
            return f"Invalid enum value. Expected '5' | '10', received '{value}'"
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"duration: Expected number, received {_zod_type(value)}"
    if "range" in spec:  # a range wins over the field's default choices
        low, high = spec["range"]
        return _number_error("duration", value, {"ge": low, "le": high})
    choices = tuple(spec.get("choices", ()))
    if choices and value not in choices:
        expected = " | ".join(str(c) for c in choices)
        return f"Invalid enum value. Expected {expected}, received '{value}'"
    return None


def _masks_error(value: Any, mask_key: str) -> str | None:
    if not isinstance(value, list):
        return f"dynamic_masks: Expected array, received {_zod_type(value)}"
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            return f"dynamic_masks.{i}: Expected object, received {_zod_type(item)}"
        unknown = [k for k in item if k not in (mask_key, "trajectories")]
        if unknown:
            keys = ", ".join(f"'{k}'" for k in unknown)
            return f"Body validation error: dynamic_masks.{i}: Unrecognized key(s) in object: {keys}"
        if item.get(mask_key) is None:
            return f"dynamic_masks.{i}.{mask_key}: Required"
        message = _string_error(f"dynamic_masks.{i}.{mask_key}", item[mask_key])
        if message:
            return message
    return None


def _field_error(wire: str, value: Any, spec: Mapping[str, Any], seed: bool) -> str | None:
    kind = spec.get("type")
    if kind in ("text", "image", "audio", "video"):
        return _string_error(wire, value)
    if kind == "image_or_pair":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return None
        return _string_error(wire, value)
    if kind == "number":
        return _number_error(wire, value, spec)
    if kind == "bool" and not isinstance(value, bool):
        return f"{wire}: Expected boolean, received {_zod_type(value)}"
    if kind == "duration":
        return _duration_error(value, spec, seed)
    if kind == "dynamic_masks":
        return _masks_error(value, catalog.MASK_SEED_NAME if seed else "mask")
    return None


def validate_body(body: Any, endpoint: str = "legacy") -> str | None:
    """Apply the service's light body validation; return an error message or None when valid.

    Models come from :mod:`airflow_provider_kling.catalog`: a retired model, a field the model does
    not take and a missing required field are refused, with cheap type checks and the duration check.
    A model id the catalog does not know passes with any fields (the service may know it).

    :param body: the parsed JSON body.
    :param endpoint: ``"legacy"`` (seed field names for models with ``seed_names``) or ``"unified"``.
    """
    if not isinstance(body, dict):
        return f"Expected object, received {_zod_type(body)}"
    model = body.get("model")
    if model is None:
        return "model: Required"
    if not isinstance(model, str):
        return f"model: Expected string, received {_zod_type(model)}"
    entry = catalog.model_entry(model)
    if entry is None:
        return None
    if entry.get("retired"):
        return f"Model {model} is no longer supported"
    seed = endpoint == "legacy" and bool(entry.get("seed_names"))
    # Name on the wire -> catalog field name.
    wire_names: dict[str, str] = {}
    for name in catalog.model_fields(model):
        wire = catalog.FIELDS[name].get("seed_name", name) if seed else name
        wire_names[wire] = name
    unknown = [k for k in body if k != "model" and k not in wire_names]
    if unknown:
        keys = ", ".join(f"'{k}'" for k in unknown)
        return f"Body validation error: Unrecognized key(s) in object: {keys}"
    catalog_to_wire = {name: wire for wire, name in wire_names.items()}
    for name in entry.get("required", ()):
        wire = catalog_to_wire.get(name, name)
        if body.get(wire) is None:
            return f"{wire}: Required"
    if "prompt_or_multi_prompt" in entry.get("rules", ()):
        if body.get("prompt") is None and body.get("multi_prompt") is None:
            return "prompt: Required"
    for wire, name in wire_names.items():
        value = body.get(wire)
        if value is not None:
            message = _field_error(wire, value, catalog.field_spec(model, name), seed)
            if message:
                return message
    return None
