"""One task per failure kind, run in a fixed order (each after the previous, whatever its end).

The test queues emulator faults in the same order: the first POST gets 403, the next six 429
(one more than the hook's attempts), and the first six polls 503.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import chain

from tests.dags.kling_common import image_to_video, recorded_dag

IMAGE = "https://images.example.org/meadow.jpg"

with recorded_dag("kling_failures", trigger_rule="all_done", poll_interval=0.2) as dag:
    chain(
        # 403 on the POST: no credits. Fails at once, no retry.
        image_to_video("forbidden", "wind in the grass", IMAGE),
        # 429 more times than the hook retries: an ordinary failure, then Airflow's retry succeeds.
        # It does not wait, so the polls' faults are left for poll_outage.
        image_to_video("rate_limited", "bees over the flowers", IMAGE, wait_for_completion=False),
        # A refused key: no retry.
        image_to_video("unauthorized", "clouds over the meadow", IMAGE, kling_conn_id="kling_bad_key"),
        # Invalid after rendering: no retry and nothing sent.
        image_to_video(
            "invalid", "{{ 'rain' }}", "ftp://images.example.org/meadow.jpg", duration="{{ 3 + 4 }}"
        ),
        # Polls fail with 503 past the hook's attempts: an ordinary failure naming the generation;
        # the retry reconnects to it.
        image_to_video("poll_outage", "a fox crosses the field", IMAGE),
        # The service ends the generation in error: no retry, in both waiting modes.
        image_to_video("errored", "[error] a face in the crowd", IMAGE),
        image_to_video("errored_deferred", "[error:2026] a banned scene", IMAGE, deferrable=True),
    )
