"""Sensor that waits for a Kling generation submitted elsewhere."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_kling.links.kling import VIDEO_URL_XCOM_KEY, KlingVideoLink
from airflow_provider_kling.utils.deferral import RetrySafeDeferral
from airflow_provider_kling.utils.results import (
    fail_fast,
    generation_from_event,
    result_dict,
    timeout_seconds,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.schemas.generation import Generation

DEFAULT_POKE_INTERVAL = 10.0


class KlingGenerationSensor(RetrySafeDeferral, BaseSensorOperator):
    """Wait for a generation (for instance one submitted with ``wait_for_completion=False``).

    It polls once per ``poke_interval``: in poke or reschedule mode from the worker, with
    ``deferrable=True`` from the triggerer while the worker slot is free. Either way it gives up after
    ``timeout`` with :class:`AirflowSensorTimeout`, and succeeds with the same XCom dict as the
    operators; a generation the service ended in error fails the task without retry.

    :param generation_id: the generation to wait for (templated, e.g. from the operator's XCom).
    :param kling_conn_id: the ``kling`` connection.
    :param model: the model, reported in the XCom dict (default: read from ``<uuid>:<model>`` ids).
    :param api: the endpoint the generation was created on, ``legacy`` or ``unified`` (templated;
        default: the connection's).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poke_interval: seconds between polls, in every mode (default 10).
    :param poll_interval: deprecated name of ``poke_interval``.
    """

    template_fields: Sequence[str] = ("generation_id", "model", "api")
    operator_extra_links = (KlingVideoLink(),)
    ui_color = "#f2e8ff"

    def __init__(
        self,
        *,
        generation_id: str,
        kling_conn_id: str = "kling_default",
        model: str | None = None,
        api: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        if poll_interval is not None:
            warnings.warn(
                "KlingGenerationSensor(poll_interval=...) is deprecated: use poke_interval, which every "
                "mode uses",
                DeprecationWarning,
                stacklevel=2,
            )
            kwargs.setdefault("poke_interval", poll_interval)
        kwargs.setdefault("poke_interval", DEFAULT_POKE_INTERVAL)
        kwargs.setdefault("timeout", timedelta(minutes=30).total_seconds())
        super().__init__(**kwargs)
        self.generation_id = generation_id
        self.kling_conn_id = kling_conn_id
        self.model = model
        self.api = api
        self.deferrable = deferrable

    @property
    def poll_interval(self) -> float:  # type: ignore[override]  # read-only: the sensor sets poke_interval
        """The one interval, under the name the operators use."""
        return float(self.poke_interval)

    def _check_arguments(self) -> None:
        from airflow_provider_kling.exceptions import KlingValidationError
        from airflow_provider_kling.utils.validation import (
            check_api,
            check_generation_id,
            check_poll_settings,
        )

        try:
            check_generation_id(self.generation_id)
            check_api(self.api)
            try:
                check_poll_settings(self.poll_interval, timeout_seconds(self.timeout))
            except KlingValidationError as exc:
                # The sensor's interval argument is poke_interval.
                renamed = [("poke_interval" if f == "poll_interval" else f, m) for f, m in exc.errors]
                raise KlingValidationError(renamed) from None
        except Exception as exc:
            raise fail_fast(exc) from exc

    def execute(self, context: Context) -> Any:
        # Airflow resolves the extra link at every defer or reschedule: empty until the video exists.
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value="")
        self._check_arguments()
        if not self.deferrable:
            return super().execute(context)
        # One poll first: a generation already done needs no trigger.
        done = self.poke(context)
        if done:
            return done.xcom_value
        from airflow_provider_kling.triggers.kling import KlingGenerationTrigger

        # Airflow's deferral timeout is bound too, so a task with no triggerer running does not wait forever.
        end_time = time.time() + timeout_seconds(self.timeout)
        self.defer_try(
            context, KlingGenerationTrigger, end_time, generation_id=self.generation_id, api=self._api
        )

    @property
    def _api(self) -> str:
        return self.api or self.hook.endpoint.api

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_provider_kling.hooks.kling import raise_for_terminal
        from airflow_provider_kling.schemas.generation import GenerationStatus

        try:
            generation = self.hook.get_generation(self.generation_id, api=self._api)
            raise_for_terminal(generation)
        except Exception as exc:
            raise fail_fast(exc, self.generation_id) from exc
        self.log.info("Kling generation %s is %s", self.generation_id, generation.raw_status)
        if generation.status is GenerationStatus.COMPLETED:
            return PokeReturnValue(is_done=True, xcom_value=self._finish(context, generation))
        return PokeReturnValue(is_done=False)

    def resume_deferral(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that timed out in Airflow is a sensor timeout, as in poke mode."""
        try:
            return super().resume_deferral(next_method, next_kwargs, context)
        except Exception as exc:
            # Airflow 3 already turns the deferral timeout into a bare AirflowSensorTimeout.
            causes = (type(exc).__name__, type(exc.__cause__).__name__)
            if "TaskDeferralTimeout" not in causes:
                raise
            raise AirflowSensorTimeout(
                f"Kling generation {self.generation_id} did not complete within the sensor's timeout "
                "(no triggerer reported on it)"
            ) from exc

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from airflow_provider_kling.exceptions import KlingGenerationTimeout

        try:
            # The event holds the video URL without its signature: the generation is read once more.
            generation = generation_from_event(event, timeout_seconds(self.timeout), self.hook, self._api)
        except KlingGenerationTimeout as exc:
            # The same outcome as in poke mode: a sensor timeout, which Airflow does not retry.
            raise AirflowSensorTimeout(str(exc)) from exc
        return self._finish(context, generation)

    def _finish(self, context: Context, generation: Generation) -> dict[str, Any]:
        if generation.video_url:
            context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=generation.video_url)
        return result_dict(generation, self.model, endpoint=self._api)
