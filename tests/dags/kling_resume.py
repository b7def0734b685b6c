"""Retries that must reconnect to the generation an earlier try paid for, not pay again.

Each task's first try "loses its worker" right after the POST (the id is already in
task_state_store) or fails to download; Airflow's own retry then runs the task again.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import quote

import requests

from airflow_provider_kling.models import GenerationStatus
from airflow_provider_kling.operators.kling import KlingImageToVideoOperator
from tests.dags.kling_common import out_dir, record_resume, recorded_dag


class LoseWorkerOnceOperator(KlingImageToVideoOperator):
    """Dies on its first try once the generation is submitted (and, optionally, has ended).

    :param wait_until_ended: die only after the service has ended the generation.
    :param finish_on_retry: on the retry, once reconnected, tell the emulator to finish the
        generation (its ``[seconds:600]`` prompt keeps it pending until then, however slow the run).
    """

    def __init__(
        self, *, wait_until_ended: bool = False, finish_on_retry: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.wait_until_ended = wait_until_ended
        self.finish_on_retry = finish_on_retry

    def _resume_or_submit(self, context: Any, request: Any) -> Any:
        generation_id, prior = super()._resume_or_submit(context, request)
        if context["ti"].try_number == 1:
            while self.wait_until_ended:
                if self.hook.get_generation(generation_id).status is not GenerationStatus.PENDING:
                    break
                time.sleep(0.1)
            raise RuntimeError(f"worker lost after submitting {generation_id}")
        record_resume(self.task_id, generation_id, prior.raw_status if prior is not None else None)
        if self.finish_on_retry:
            control = f"{self.hook.endpoint.base_url}/_emulator/generations/{quote(generation_id)}/complete"
            requests.post(control, timeout=10).raise_for_status()
        return generation_id, prior


with recorded_dag("kling_resume", poll_interval=0.2) as dag:
    LoseWorkerOnceOperator(
        task_id="resume_pending",
        image_url="https://images.example.org/harbour.jpg",
        prompt="resume_pending: boats rock gently in the harbour [seconds:600]",
        finish_on_retry=True,
        deferrable=False,
    )
    LoseWorkerOnceOperator(
        task_id="resume_pending_deferred",
        image_url="https://images.example.org/harbour.jpg",
        prompt="resume_pending_deferred: gulls circle above the harbour [seconds:600]",
        finish_on_retry=True,
        deferrable=True,
    )
    LoseWorkerOnceOperator(
        task_id="resume_completed",
        image_url="https://images.example.org/harbour.jpg",
        prompt="resume_completed: the lighthouse beam sweeps the bay",
        wait_until_ended=True,
    )
    # The first try's generation ends in error; the retry must pay for a new one (with a prompt
    # the emulator lets succeed).
    LoseWorkerOnceOperator(
        task_id="resubmit_after_error",
        image_url="https://images.example.org/harbour.jpg",
        prompt="resubmit_after_error: {{ '[error]' if ti.try_number == 1 else 'a calm sea' }}",
        wait_until_ended=True,
    )
    # No subclass: the download itself fails on the first try (the emulator drops it).
    KlingImageToVideoOperator(
        task_id="download_fails_once",
        image_url="https://images.example.org/harbour.jpg",
        prompt="download_fails_once: waves break on the pier",
        download_to=os.path.join(out_dir(), "download") + "/",
    )
