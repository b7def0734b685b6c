"""A deferrable task whose deferral times out because no triggerer runs (issue 11 #3).

Try 1 submits, logs where and how it waits, and defers; Airflow then resumes it as after the
deferral's timeout. Try 2 (Airflow's retry) must reconnect to the paid generation, not pay again.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import defer_and_time_out, recorded_dag


class NoTriggererOnceOperator(KlingImageToVideoOperator):
    def defer(self, *, trigger: Any, method_name: str, kwargs: Any = None, timeout: Any = None) -> None:
        ti = self._ti_try
        if ti == 1:
            defer_and_time_out(self, timeout, {"trigger": trigger.serialize()[1]})
        super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

    def execute(self, context: Any) -> Any:
        self._ti_try = context["ti"].try_number
        return super().execute(context)


with recorded_dag("kling_deferral_timeout", poll_interval=0.2) as dag:
    NoTriggererOnceOperator(
        task_id="no_triggerer",
        image_url="https://images.example.org/harbour.jpg",
        prompt="no_triggerer: fog lifts over the bay",
        deferrable=True,
    )
