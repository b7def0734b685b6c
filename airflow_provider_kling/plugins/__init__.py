"""The "Kling videos" gallery: an Airflow plugin (Airflow 3.1+) shipped with the provider.

The plugin adds a page to the Airflow UI's navigation (and a "Kling videos" tab on each DAG) that
lists the generations the Kling tasks of the deployment returned as XCom, with an inline player for
downloaded videos. The page is a small FastAPI app mounted by the api-server under ``/kling``
(:mod:`airflow_provider_kling.plugins.gallery`); it authenticates with Airflow's own token and shows
only the DAGs the auth manager lets the user read.

Airflow imports this module wherever it loads plugins (api-server, scheduler, dag-processor, task
processes), so it imports nothing heavy: the FastAPI app is built on first access to
``fastapi_apps``, which only the api-server's plugin integration (and ``airflow plugins``) makes.
Before Airflow 3.1 (no external views) the plugin has no app and no view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.providers.common.compat.sdk import AirflowPlugin

#: Where the api-server mounts the gallery app.
URL_PREFIX = "/kling"
#: The gallery's route inside the Airflow UI (``<base>/plugin/kling-videos``).
URL_ROUTE = "kling-videos"
#: The per-DAG tab's route (``<base>/dags/<dag_id>/plugin/kling-videos-dag``). Airflow keeps only
#: views that have a route, and one view per route across all plugins: the tab needs its own.
DAG_URL_ROUTE = "kling-videos-dag"


def supports_gallery() -> bool:
    """Whether this Airflow can show the gallery: 3.1+ (FastAPI plugin apps and external views)."""
    from airflow_provider_kling.version_compat import AIRFLOW_V_3_1_PLUS

    return AIRFLOW_V_3_1_PLUS


def base_path() -> str:
    """The path part of ``[api] base_url`` ("" when Airflow is served at the root)."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _fastapi_apps() -> list[dict[str, Any]]:
    if not supports_gallery():
        return []
    from airflow_provider_kling.plugins.gallery import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Kling videos"}]


def _external_views() -> list[dict[str, Any]]:
    if not supports_gallery():
        return []
    prefix = base_path() + URL_PREFIX
    icon = f"{prefix}/icon.svg"
    return [
        # The navigation entry: the whole deployment's generations, embedded in the UI.
        {
            "name": "Kling videos",
            "href": f"{prefix}/",
            "url_route": URL_ROUTE,
            "destination": "nav",
            "category": "browse",
            "icon": icon,
        },
        # A tab on each DAG's page: the same gallery filtered to that DAG.
        {
            "name": "Kling videos",
            "href": f"{prefix}/?dag_id={{DAG_ID}}",
            "url_route": DAG_URL_ROUTE,
            "destination": "dag",
            "icon": icon,
        },
    ]


class _BuiltOnFirstAccess:
    """A plugin class attribute computed on first access, then kept (Airflow reads it off the class).

    :param build: returns the attribute's value.
    """

    def __init__(self, build: Callable[[], list[dict[str, Any]]]) -> None:
        self.build = build
        self.value: list[dict[str, Any]] | None = None

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        if self.value is None:
            self.value = self.build()
        return self.value


class KlingGalleryPlugin(AirflowPlugin):
    """The "Kling videos" page: recent generations with a player, per the user's DAG permissions."""

    name = "kling_gallery"
    fastapi_apps = _BuiltOnFirstAccess(_fastapi_apps)  # type: ignore[assignment]
    external_views = _BuiltOnFirstAccess(_external_views)  # type: ignore[assignment]
