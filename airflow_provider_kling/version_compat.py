"""Which Airflow runs the provider: the one place that compares Airflow versions.

Features that arrived in a later minor than the provider's floor (2.11) are guarded by these constants,
named as in Airflow's own providers, rather than by version checks or ``ImportError`` fallbacks spread
through the package. Tests that read what only a later minor gives carry the matching pytest marker
(``airflow31``, ``airflow32``, ``airflow33``: see pyproject's markers).
"""

from __future__ import annotations


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    """The installed Airflow's (major, minor, micro), pre-release and local parts dropped."""
    from airflow import __version__
    from packaging.version import Version

    version = Version(__version__)
    return version.major, version.minor, version.micro


#: Airflow 3: the Task SDK, dag bundles, the api-server.
AIRFLOW_V_3_0_PLUS = get_base_airflow_version_tuple() >= (3, 0, 0)
#: Airflow 3.1: async connection lookup (``aget_connection``), FastAPI plugin apps with external views.
AIRFLOW_V_3_1_PLUS = get_base_airflow_version_tuple() >= (3, 1, 0)
#: Airflow 3.2: ``airflow.sdk.observability.stats``.
AIRFLOW_V_3_2_PLUS = get_base_airflow_version_tuple() >= (3, 2, 0)
#: Airflow 3.3: ``task_state_store``, ``airflow.sdk.log.amask_secret``.
AIRFLOW_V_3_3_PLUS = get_base_airflow_version_tuple() >= (3, 3, 0)
#: Airflow 3.0.0 to 3.1.0 keep ``next_method`` when a try ends (apache/airflow#56704, fixed in 3.1.1): a
#: retry resumes the last deferral instead of running ``execute`` (see ``utils/deferral.py``).
AIRFLOW_RETRY_KEEPS_DEFERRAL = (3, 0, 0) <= get_base_airflow_version_tuple() < (3, 1, 1)

__all__ = [
    "AIRFLOW_RETRY_KEEPS_DEFERRAL",
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "get_base_airflow_version_tuple",
]
