"""Sensor that waits for a Kling generation submitted elsewhere."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_kling.links.kling import VIDEO_URL_XCOM_KEY, KlingVideoLink
from airflow_provider_kling.operators.kling import (
    fail_fast,
    generation_from_event,
    result_dict,
    timeout_seconds,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.models import Generation


class KlingGenerationSensor(BaseSensorOperator):
    """Wait for a generation (for instance one submitted with ``wait_for_completion=False``).

    In poke mode it polls once per ``poke_interval``; with ``deferrable=True`` the wait runs in the
    triggerer and the worker slot is free. Succeeds with the same XCom dict as the operator; a
    generation the service ended in error fails the task without retry.

    :param generation_id: the generation to wait for (templated, e.g. from the operator's XCom).
    :param kling_conn_id: the ``kling`` connection.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between polls in deferrable mode (poke mode uses ``poke_interval``).
    """

    template_fields: Sequence[str] = ("generation_id",)
    operator_extra_links = (KlingVideoLink(),)
    ui_color = "#f2e8ff"

    def __init__(
        self,
        *,
        generation_id: str,
        kling_conn_id: str = "kling_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("timeout", timedelta(minutes=30).total_seconds())
        super().__init__(**kwargs)
        self.generation_id = generation_id
        self.kling_conn_id = kling_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def _hook(self) -> Any:
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id)

    def _check_arguments(self) -> None:
        from airflow_provider_kling.hooks.kling import check_generation_id, check_poll_settings

        try:
            check_generation_id(self.generation_id)
            check_poll_settings(self.poll_interval, timeout_seconds(self.timeout))
        except Exception as exc:
            raise fail_fast(exc) from exc

    def execute(self, context: Context) -> Any:
        self._check_arguments()
        # Airflow resolves the extra link at every defer or reschedule: empty until the video exists.
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value="")
        if not self.deferrable:
            return super().execute(context)
        # One poll first: a generation already done needs no trigger.
        done = self.poke(context)
        if done:
            return done.xcom_value
        from airflow_provider_kling.triggers.kling import KlingGenerationTrigger

        self.defer(
            trigger=KlingGenerationTrigger(
                generation_id=self.generation_id,
                kling_conn_id=self.kling_conn_id,
                poll_interval=self.poll_interval,
                end_time=time.time() + timeout_seconds(self.timeout),
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_provider_kling.hooks.kling import raise_for_terminal
        from airflow_provider_kling.models import GenerationStatus

        try:
            generation = self._hook().get_generation(self.generation_id)
            raise_for_terminal(generation)
        except Exception as exc:
            raise fail_fast(exc, self.generation_id) from exc
        self.log.info("Kling generation %s is %s", self.generation_id, generation.raw_status)
        if generation.status is GenerationStatus.COMPLETED:
            return PokeReturnValue(is_done=True, xcom_value=self._finish(context, generation))
        return PokeReturnValue(is_done=False)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        return self._finish(context, generation_from_event(event, timeout_seconds(self.timeout)))

    def _finish(self, context: Context, generation: Generation) -> dict[str, Any]:
        if generation.video_url:
            context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=generation.video_url)
        return result_dict(generation, model=None)
