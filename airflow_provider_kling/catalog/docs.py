"""The catalog rendered for people: the README's and the docs site's model table.

Kept apart from :mod:`airflow_provider_kling.catalog.data` so the table stays data only; the docs site's
build hook (``docs/hooks.py``) and a README test call :func:`model_table_markdown`.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_kling.catalog.data import (
    KINDS,
    MB,
    MODELS,
    current_models,
    field_spec,
    model_entry,
    model_fields,
)

_RULE_DOCS: dict[str, str] = {
    "tail_needs_no_audio": "a tail image needs generate_audio=false",
    "effect_image_count": "two images for hug, kiss, heart_gesture",
}
#: The fields Kling's exclusive_tail_masks_camera rule is about, as the table names them.
_EXCLUSIVE = (
    ("tail_image_url", "tail image"),
    ("static_mask", "masks"),
    ("camera_control", "camera control"),
)


def _size(nbytes: int) -> str:
    return f"{nbytes // MB} MB" if nbytes % MB == 0 else f"{nbytes} bytes"


def _model_limits(model_id: str) -> list[str]:
    """The limits a user meets first on ``model_id``: duration, lengths, sizes, counts, cross-field rules."""
    entry = model_entry(model_id) or {}
    fields = model_fields(model_id)
    limits: list[str] = []
    if "duration" in fields:
        spec = field_spec(model_id, "duration")
        if "range" in spec:
            low, high = spec["range"]
            limits.append(f"duration {low}..{high} s")
        else:
            limits.append("duration " + " or ".join(str(c) for c in spec["choices"]) + " s")
    if "prompt" in fields and field_spec(model_id, "prompt").get("max_length"):
        limits.append(f"prompt <= {field_spec(model_id, 'prompt')['max_length']} characters")
    if "image_url" in fields:
        spec = field_spec(model_id, "image_url")
        limits.append(f"image <= {_size(spec['max_bytes'])}")
    for name, what in (("image_list", "images"), ("multi_prompt", "shots"), ("elements", "elements")):
        if name in fields:
            spec = field_spec(model_id, name)
            low, high = spec.get("min_items"), spec["max_items"]
            limits.append(f"{name}: {low}..{high} {what}" if low else f"{name}: up to {high} {what}")
    if "audio_url" in fields:
        spec = field_spec(model_id, "audio_url")
        limits.append(f"audio {'/'.join(spec['formats'])} <= {_size(spec['max_bytes'])}")
    for rule in entry.get("rules", ()):
        if rule == "exclusive_tail_masks_camera":
            present = [label for name, label in _EXCLUSIVE if name in fields]
            if len(present) > 1:
                limits.append(f"{', '.join(present[:-1])} and {present[-1]} exclude each other")
        elif rule != "prompt_or_multi_prompt":  # shown as "`prompt` or `multi_prompt`" in required
            limits.append(_RULE_DOCS.get(rule, rule))
    return limits


def model_table_markdown() -> str:
    """The README's model table: one row per current model, generated from :data:`MODELS`.

    Columns: the model id (with its aliases), its kind and the operator that submits it, its required
    and optional fields (``provider``, which every model takes, is left out), the limits a user meets
    first, and the catalog's note (deprecated fields included). Retired models follow the table.
    """

    def code(names: Any) -> str:
        return ", ".join(f"`{n}`" for n in names) or "-"

    rows = [
        "| model | kind (operator) | required | optional | limits | notes |",
        "|---|---|---|---|---|---|",
    ]
    for model_id in current_models():
        entry = MODELS[model_id]
        required = code(entry.get("required", ()))
        optional = list(entry.get("optional", ()))
        if "prompt_or_multi_prompt" in entry.get("rules", ()):
            either = "`prompt` or `multi_prompt`"
            required = either if required == "-" else f"{required}, {either}"
            optional = [n for n in optional if n not in ("prompt", "multi_prompt")]
        notes = []
        if entry.get("note"):
            notes.append(entry["note"])
        if entry.get("deprecated"):
            notes.append(f"deprecated: {', '.join(entry['deprecated'])}")
        also = (*entry.get("aliases", ()), *entry.get("renamed_from", ()))
        if also:
            notes.append("also " + code(also))
        rows.append(
            f"| `{model_id}` | {entry['kind']} ({KINDS[entry['kind']]}) | {required} | "
            f"{code(optional)} | {'; '.join(_model_limits(model_id)) or '-'} | {'; '.join(notes) or '-'} |"
        )
    retired = [(m, e["retired"]) for m, e in MODELS.items() if e.get("retired")]
    if retired:
        rows.append("")
        rows.append(
            "Retired (refused before any request unless `check_capabilities=False`): "
            + "; ".join(f"`{m}` ({why})" for m, why in retired)
            + "."
        )
    return "\n".join(rows) + "\n"
