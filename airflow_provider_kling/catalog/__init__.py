"""The Kling model catalog: the table as data (:mod:`.data`) and its rendering for the docs (:mod:`.docs`).

Everything is re-exported here, so ``from airflow_provider_kling.catalog import MODELS`` keeps working.
Neither module imports pydantic or Airflow (the operator modules never import the catalog at DAG parse
time).
"""

from __future__ import annotations

from airflow_provider_kling.catalog.data import (
    ALIASES,
    ASPECT_RATIOS,
    BASE64_MEDIA,
    CAMERA_AXES,
    CAMERA_TYPES,
    COMMON_OPTIONAL,
    DEFAULT_ENDPOINT,
    EFFECT_SCENES,
    ENDPOINT_PATHS,
    FIELDS,
    KINDS,
    MASK_SEED_NAME,
    MB,
    MODEL_ALIASES,
    MODELS,
    ONE_IMAGE_EFFECTS,
    TWO_IMAGE_EFFECTS,
    current_models,
    field_spec,
    model_entry,
    model_fields,
)
from airflow_provider_kling.catalog.docs import model_table_markdown

__all__ = [
    "ALIASES",
    "ASPECT_RATIOS",
    "BASE64_MEDIA",
    "CAMERA_AXES",
    "CAMERA_TYPES",
    "COMMON_OPTIONAL",
    "DEFAULT_ENDPOINT",
    "EFFECT_SCENES",
    "ENDPOINT_PATHS",
    "FIELDS",
    "KINDS",
    "MASK_SEED_NAME",
    "MB",
    "MODELS",
    "MODEL_ALIASES",
    "ONE_IMAGE_EFFECTS",
    "TWO_IMAGE_EFFECTS",
    "current_models",
    "field_spec",
    "model_entry",
    "model_fields",
    "model_table_markdown",
]
