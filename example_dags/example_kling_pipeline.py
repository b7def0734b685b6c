"""Generate one clip per shot of a small storyboard, at most a few at a time, and write a manifest.

``prepare_shots`` (TaskFlow) lists the images and prompts; the Kling operator is mapped over them
with ``expand_kwargs``, one task instance per shot, each waiting in the triggerer (deferrable)
rather than holding a worker slot. Every mapped instance runs in the ``kling`` pool, so the pool's
size bounds how many paid generations run at once; create it first, counting deferred tasks (a
deferred task is a generation still running on the service)::

    airflow pools set kling 2 "Concurrent Kling generations" --include-deferred

``write_manifest`` collects every shot's result into ``manifest-<run id>.json`` beside the videos.

Environment (defaults suit the real service): ``KLING_DOWNLOAD_DIR``, ``KLING_POLL_INTERVAL``
(default 10 s), ``KLING_TIMEOUT`` (default 1800 s).
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_kling.operators.kling import KlingImageToVideoOperator

DOWNLOAD_DIR = os.environ.get("KLING_DOWNLOAD_DIR") or os.path.join(
    os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos"
)
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
TIMEOUT = timedelta(seconds=float(os.environ.get("KLING_TIMEOUT", "1800")))
#: The pool that bounds concurrent generations (the service also limits concurrency per key).
POOL = "kling"

STORYBOARD = [
    (
        "https://upload.wikimedia.org/wikipedia/commons/3/3a/Cat03.jpg",
        "The cat looks up and its ears twitch, gentle camera push-in",
    ),
    (
        "https://upload.wikimedia.org/wikipedia/commons/a/a8/Tour_Eiffel_Wikimedia_Commons.jpg",
        "Clouds drift past the tower at golden hour, slow timelapse",
    ),
    (
        "https://upload.wikimedia.org/wikipedia/commons/4/47/PNG_transparency_demonstration_1.png",
        "The dice tumble slowly across the table and come to rest, soft studio light",
    ),
]

with DAG(
    dag_id="example_kling_pipeline",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
) as dag:

    @task
    def prepare_shots() -> list[dict[str, Any]]:
        """One dict of operator arguments per shot: the mapped operator's expand_kwargs input."""
        return [
            {"image_url": image_url, "prompt": prompt, "duration": "5"} for image_url, prompt in STORYBOARD
        ]

    videos = KlingImageToVideoOperator.partial(
        task_id="generate",
        pool=POOL,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
        # Each video is named after its generation id inside this folder.
        download_to=os.path.join(DOWNLOAD_DIR, "pipeline") + "/",
        map_index_template="{{ task.prompt[:40] }}",
    ).expand_kwargs(prepare_shots())

    @task
    def write_manifest(results: list[dict[str, Any]], run_id: str | None = None) -> str:
        """Write every shot's generation id, file and usage to one JSON file; return its path."""
        shots = list(results)
        folder = os.path.join(DOWNLOAD_DIR, "pipeline")
        os.makedirs(folder, exist_ok=True)
        safe_run_id = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id or "manual")
        path = os.path.join(folder, f"manifest-{safe_run_id}.json")
        with open(path, "w", encoding="utf-8") as out:
            json.dump({"run_id": run_id, "count": len(shots), "videos": shots}, out, indent=2)
        return path

    write_manifest(videos.output)
