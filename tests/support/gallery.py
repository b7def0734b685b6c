"""The gallery's real app signed in as a viewer (and the watch over opened files, from opens.py).

Shared by the gallery tests under tests/unit/plugins/: each builds its own runs, then asks the app
through FastAPI's test client. The signed-in user is set by overriding Airflow's ``get_user``
dependency; rights come from tests/support/auth_manager.py (the Simple auth manager plus denials).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.support.opens import OPENED, watching_opens  # noqa: F401 (the gallery tests import them here)


@contextmanager
def signed_in_gallery(monkeypatch: pytest.MonkeyPatch, roots: str | None = None) -> Iterator[Any]:
    """The gallery app signed in as ``viewer``, with no DAG denied yet.

    :param monkeypatch: the test's monkeypatch, which sets the auth manager and the roots.
    :param roots: the value of ``[kling] gallery_roots``; ``None`` leaves it unset.
    :return: (yields) FastAPI's test client of the app; :data:`OPENED` is cleared before.
    """
    from airflow.api_fastapi import app as api_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    from airflow_provider_kling.plugins.gallery import create_app

    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "tests.support.auth_manager.DagDenyingAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("KLING_TEST_DENIED_DAGS", "")
    if roots is not None:
        monkeypatch.setenv("AIRFLOW__KLING__GALLERY_ROOTS", roots)
    api_app.purge_cached_app()
    api_app.create_auth_manager()
    app = create_app()
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="viewer", role="viewer")
    OPENED.clear()
    with TestClient(app) as test_client:
        yield test_client
    api_app.purge_cached_app()
