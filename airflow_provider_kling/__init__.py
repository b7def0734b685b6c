"""Apache Airflow provider for Kling image-to-video generation through the Apilaplas API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager without importing the hook."""
    return {
        "package-name": "airflow-provider-kling",
        "name": "Kling",
        "description": "Turn images and text into video clips with Kling through the Apilaplas API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Kling",
                "external-doc-url": "https://api.apilaplas.com",
                "tags": ["ai", "video"],
            }
        ],
        "hooks": [
            {"integration-name": "Kling", "python-modules": ["airflow_provider_kling.hooks.kling"]},
        ],
        "operators": [
            {"integration-name": "Kling", "python-modules": ["airflow_provider_kling.operators.kling"]},
        ],
        "sensors": [
            {"integration-name": "Kling", "python-modules": ["airflow_provider_kling.sensors.kling"]},
        ],
        "triggers": [
            {"integration-name": "Kling", "python-modules": ["airflow_provider_kling.triggers.kling"]},
        ],
        "extra-links": ["airflow_provider_kling.links.kling.KlingVideoLink"],
        # The "Kling videos" gallery (Airflow 3.1+); also an airflow.plugins entry point.
        "plugins": [
            {"name": "kling_gallery", "plugin-class": "airflow_provider_kling.plugins.KlingGalleryPlugin"}
        ],
        "connection-types": [
            {
                "connection-type": "kling",
                "hook-class-name": "airflow_provider_kling.hooks.kling.KlingHook",
                "hook-name": "Kling",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login", "extra"],
                    "relabeling": {"host": "API base URL", "password": "API Key"},
                    "placeholders": {
                        "host": "https://api.apilaplas.com (default; http only for 127.0.0.1/localhost)",
                        "password": "Apilaplas API key",
                    },
                },
                "conn-fields": {
                    "endpoint": {
                        "label": "Endpoint",
                        "description": "legacy: /v2/generate/video/kling/generation (default); "
                        "unified: /v2/video/generations",
                        "schema": {"type": ["string", "null"], "enum": ["legacy", "unified", None]},
                    },
                    "input_staging": {
                        "label": "Input staging prefix",
                        "description": "s3:// or gs:// prefix where local audio/video inputs and "
                        "upstream videos are uploaded once (by content hash) and sent presigned, "
                        "e.g. s3://bucket/kling-inputs/",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            }
        ],
    }
