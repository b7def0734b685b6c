"""A daily clip as an Asset: one DAG makes it, a second DAG runs whenever it is updated.

``example_kling_daily_asset`` generates the day's clip at midnight UTC and downloads it to
``<KLING_DOWNLOAD_DIR>/daily/<ds>.mp4``. The operator's ``outlets`` declare the Asset
``kling_daily_video``: when the task succeeds Airflow records an asset event whose ``extra`` holds
the generation id and the file's path.

``example_kling_daily_asset_consumer`` is scheduled on that Asset (``schedule=[asset]``): it reads the
path from the triggering event and publishes the file as ``latest.mp4``. Run by hand, it takes the
Asset's latest event instead.

Environment (defaults suit the real service): ``KLING_DOWNLOAD_DIR``, ``KLING_IMAGE_URL``,
``KLING_POLL_INTERVAL`` (default 10 s), ``KLING_TIMEOUT`` (default 1800 s).
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, task

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

DOWNLOAD_DIR = os.path.abspath(
    os.environ.get("KLING_DOWNLOAD_DIR")
    or os.path.join(os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos")
)
DAILY_DIR = os.path.join(DOWNLOAD_DIR, "daily")
IMAGE_URL = os.environ.get(
    "KLING_IMAGE_URL",
    "https://upload.wikimedia.org/wikipedia/commons/a/a8/Tour_Eiffel_Wikimedia_Commons.jpg",
)
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
TIMEOUT = timedelta(seconds=float(os.environ.get("KLING_TIMEOUT", "1800")))

#: The day's clip. The URI is a stable identity whatever the download folder; each event carries the
#: actual file in ``extra`` (``video_path``, ``generation_id``, ``file_size``).
KLING_DAILY_VIDEO = Asset(name="kling_daily_video", uri="x-kling://example/daily-video")

with DAG(
    dag_id="example_kling_daily_asset",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
) as producer:
    KlingImageToVideoOperator(
        task_id="daily_clip",
        image_url=IMAGE_URL,
        prompt="Timelapse of the city waking up on {{ ds }}, clouds rolling past, warm morning light",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
        download_to=os.path.join(DAILY_DIR, "{{ ds }}.mp4"),
        # A rerun of the same day replaces that day's file.
        overwrite=True,
        outlets=[KLING_DAILY_VIDEO],
    )


with DAG(
    dag_id="example_kling_daily_asset_consumer",
    schedule=[KLING_DAILY_VIDEO],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
    # It only ever runs when the Asset is updated, so it can start unpaused.
    is_paused_upon_creation=False,
) as consumer:

    @task(inlets=[KLING_DAILY_VIDEO])
    def publish_latest(triggering_asset_events: Any = None, inlet_events: Any = None) -> dict[str, Any]:
        """Copy the newest daily clip to ``latest.mp4`` and return what was published."""
        events = list(triggering_asset_events.get(KLING_DAILY_VIDEO, [])) if triggering_asset_events else []
        if not events:
            # A manual run: the Asset's most recent event.
            events = list(inlet_events[KLING_DAILY_VIDEO])
        if not events:
            raise ValueError("kling_daily_video has no event yet: run example_kling_daily_asset first")
        extra = events[-1].extra or {}
        source = extra.get("video_path")
        if not source or not os.path.isfile(source):
            raise FileNotFoundError(f"the asset event names no downloaded video: {extra!r}")
        latest = os.path.join(DAILY_DIR, "latest.mp4")
        shutil.copyfile(source, latest)
        return {
            "generation_id": extra.get("generation_id"),
            "source": source,
            "published": latest,
            "bytes": os.path.getsize(latest),
        }

    publish_latest()
