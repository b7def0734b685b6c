"""A Simple auth manager that also denies chosen DAGs to chosen users: per-DAG rights for the tests.

The Simple auth manager knows roles (and teams in multi-team mode), not rights per DAG. The
deployment of tests/support/deployment.py uses this subclass so tests/e2e/test_gallery.py can check
that a user without access to a DAG does not see its videos. ``KLING_TEST_DENIED_DAGS`` lists the denials as
``user:dag_id`` pairs separated by commas; everything else behaves as in the Simple auth manager.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


def denied() -> set[tuple[str, str]]:
    """The (user, dag_id) pairs of ``KLING_TEST_DENIED_DAGS``."""
    pairs = set()
    for item in os.environ.get("KLING_TEST_DENIED_DAGS", "").split(","):
        user, sep, dag_id = item.strip().partition(":")
        if sep:
            pairs.add((user, dag_id))
    return pairs


class DagDenyingAuthManager(SimpleAuthManager):
    """:class:`SimpleAuthManager` plus the denials of ``KLING_TEST_DENIED_DAGS``."""

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        dag_id = getattr(details, "id", None)
        if dag_id and (user.get_name(), dag_id) in denied():
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
