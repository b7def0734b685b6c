"""One in-process execution API per test process for ``dag.test()`` on Airflow 3.0 to 3.2.

``dag.test()`` runs each task against Airflow's in-process execution API
(``airflow.sdk.execution_time.supervisor.in_process_api_server``). Before 3.3 that function builds a
new ``InProcessExecutionAPI`` for every task: a new FastAPI app, a new a2wsgi event-loop thread that is
never stopped, and on the task's first request Cadwyn generates every API version's routers again
(about 1 to 1.5 s of CPU per task, and more as the leftover threads pile up). Airflow 3.3 caches it
(``functools.lru_cache(maxsize=1)``, apache/airflow#65235); this module gives the older minors the same
cache, so their ``dag.test()`` runs as fast as 3.3's and the tests measure the provider, not the set-up.
"""

from __future__ import annotations

import functools

from airflow_provider_kling.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS


def reuse_in_process_execution_api() -> bool:
    """Make ``dag.test()`` reuse one in-process execution API on Airflow 3.0 to 3.2, as 3.3 does.

    Idempotent; does nothing on 2.x (no Task SDK) nor on 3.3+ (already cached there).

    :return: whether the supervisor's ``in_process_api_server`` is cached now.
    """
    if not AIRFLOW_V_3_0_PLUS:
        return False
    from airflow.sdk.execution_time import supervisor

    if AIRFLOW_V_3_3_PLUS or hasattr(supervisor.in_process_api_server, "cache_info"):
        return True
    # Safe to share: the app's auth overrides are set once, and each task's _api_client() sets the
    # DAG bag override again before its first request (tasks of one process run one at a time).
    supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)
    return True
