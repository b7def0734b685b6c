"""The gallery's real app signed in as a viewer, and a watch over the files the process opens.

Shared by the gallery tests under tests/unit/plugins/: each builds its own runs, then asks the app
through FastAPI's test client. The signed-in user is set by overriding Airflow's ``get_user``
dependency; rights come from tests/support/auth_manager.py (the Simple auth manager plus denials).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

#: Every path the process opens while :func:`watching_opens` is active (an audit hook: it sees
#: ``open()`` and ``os.open()``).
OPENED: list[str] = []
_WATCHING: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _WATCHING and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextmanager
def watching_opens() -> Iterator[None]:
    """Record into :data:`OPENED` every path opened inside the block."""
    _WATCHING.append(True)
    try:
        yield
    finally:
        _WATCHING.clear()


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
