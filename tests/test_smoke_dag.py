from __future__ import annotations


def test_dag_runs(emulator, airflow_db, tmp_path):
    from tests.dags.smoke import dag

    dr = dag.test()
    print(dr.state, [(ti.task_id, ti.state) for ti in dr.get_task_instances()])
    assert dr.state == "success"
