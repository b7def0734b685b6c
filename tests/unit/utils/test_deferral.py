"""A retry after a resumed deferral starts from ``execute`` on every Airflow 3 minor (utils/deferral.py)."""

from __future__ import annotations

import pytest

from airflow_provider_kling.version_compat import AIRFLOW_RETRY_KEEPS_DEFERRAL, AIRFLOW_V_3_3_PLUS
from tests.support.dags import TEST_DAGS, load_dag_file, posts, run_dag

# dag.test() from a bundle and airflow.sdk DAGs: Airflow 3 only.
pytestmark = pytest.mark.airflow3


def test_a_retry_after_a_resumed_deferral_starts_from_execute(emulator, airflow_db, capfd):
    module = load_dag_file(TEST_DAGS / "kling_retry_after_resume.py")
    result = run_dag(module.dag)
    text = "".join(capfd.readouterr())

    ti = result.ti("lost_after_resume")
    assert (ti.state, ti.try_number) == ("success", 2)
    sent = posts(emulator, "lost_after_resume:")
    if AIRFLOW_V_3_3_PLUS:
        # execute reconnected to try 1's generation through task_state_store: paid once.
        assert len(sent) == 1
    else:
        # No task_state_store: execute submitted anew (the README says so), rather than resuming try 1's
        # deferral with its old event as Airflow 3.0 would.
        assert len(sent) == 2
    if AIRFLOW_RETRY_KEEPS_DEFERRAL:
        assert "Try 2 starts from execute (Airflow resumed the deferral of try 1)" in text
