"""Downloads the user did not ask to overwrite, and service ids that try to leave the folder.

Run by tests/integration/test_downloads.py with ``run_conf={"out": <folder>}`` against an emulator.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import record_bad_input_failure

COMMON = {
    "image_url": "https://example.com/cat.png",
    "prompt": "a cat turns its head",
    "kling_conn_id": "kling_downloads",
    "poll_interval": 0.1,
    "timeout": 60,
    "deferrable": False,
}
OUT = "{{ dag_run.conf['out'] }}"

with DAG(
    "bad_input_downloads",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1),
    default_args={"retries": 0, "on_failure_callback": record_bad_input_failure},
) as dag:
    KlingImageToVideoOperator(task_id="keep_existing", download_to=OUT + "/existing.mp4", **COMMON)
    KlingImageToVideoOperator(
        task_id="replace_existing", download_to=OUT + "/replaced.mp4", overwrite=True, **COMMON
    )
    KlingImageToVideoOperator(task_id="new_folders", download_to=OUT + "/new/nested/folders/", **COMMON)

with DAG(
    "bad_input_hostile_id",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1),
    default_args={"retries": 0, "on_failure_callback": record_bad_input_failure},
) as hostile_dag:
    KlingImageToVideoOperator(task_id="hostile_id", download_to=OUT + "/clips/", **COMMON)
