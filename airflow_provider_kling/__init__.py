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
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["legacy", "unified", None],
                            # The form's dropdown shows these instead of the raw values ("null").
                            "values_display": {
                                "legacy": "legacy",
                                "unified": "unified",
                                "null": "default (legacy)",
                            },
                        },
                    },
                    "input_staging": {
                        "label": "Input staging prefix",
                        "description": "s3:// or gs:// prefix where local audio/video inputs and "
                        "upstream videos are uploaded once (by content hash) and sent presigned, "
                        "e.g. s3://bucket/kling-inputs/",
                        "schema": {"type": ["string", "null"]},
                    },
                    "daily_usd_cap": {
                        "label": "Daily USD cap",
                        "description": "Most USD this key may spend per UTC day, a number above 0 "
                        "(e.g. 25); a request whose estimate would cross it fails before it is sent. "
                        "Empty: no cap",
                        "schema": {"type": ["number", "null"], "minimum": 0, "exclusiveMinimum": 0},
                    },
                    "prices": {
                        "label": "Prices",
                        "description": "JSON object of model id -> USD per second of video, e.g. "
                        '{"kling-video/v1.6/pro/image-to-video": 0.098}, or -> a pricing object; '
                        "used where the service's catalogue gives no price. Empty: the catalogue only",
                        "schema": {"type": ["object", "null"]},
                    },
                    "reconcile_window_seconds": {
                        "label": "Lost-answer window (seconds)",
                        "description": "How long after a POST whose answer was lost to look for it in "
                        "/v2/logs before sending again: seconds above 0. Empty: 600",
                        "schema": {"type": ["number", "null"], "minimum": 0, "exclusiveMinimum": 0},
                    },
                    "reconcile_poll_seconds": {
                        "label": "Lost-answer poll (seconds)",
                        "description": "Seconds between looks for a lost POST in /v2/logs, above 0. "
                        "Empty: 10",
                        "schema": {"type": ["number", "null"], "minimum": 0, "exclusiveMinimum": 0},
                    },
                    "allow_loopback_downloads": {
                        "label": "Allow loopback downloads",
                        "description": "For the local emulator only: let video downloads reach "
                        "127.0.0.1/localhost (plain http too). Off for the real service",
                        "schema": {"type": ["boolean", "null"]},
                    },
                },
            }
        ],
    }
