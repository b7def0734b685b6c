"""Chained generations: a text-to-video clip, then an o1 video edit of that clip; both kept, re-run safe.

1. ``clip`` (v1.6 pro, text to video) makes a 5 s clip from the ``prompt`` param and stores it
   under the ``output`` param.
2. ``restyle`` (o1 video-to-video edit) takes that clip as its ``video_url``: ``clip.output`` is the
   first task's result, and the provider hands the stored video to the service before anything is
   paid. From object storage it is presigned for a few minutes; a local file is uploaded once (by
   content hash) to the connection's ``input_staging`` prefix and presigned; with neither, the service's
   own URL of the first generation is read fresh.

Both videos land under ``output``, a local folder by default or an object-storage folder such as
``s3://aws_default@my-videos/chain/`` (install ``airflow-provider-kling[amazon]``), each with its
``.kling.json`` sidecar. Re-running the DAG (a clear, a rerun of the same prompt) pays nothing: every
task finds the video of the same request already stored (``skip_existing``, the default wherever
there is a destination), and the edit's request is fingerprinted by the first generation's id, never by
a signed URL.

Environment (defaults suit the real service, https://api.apilaplas.com): ``KLING_DOWNLOAD_DIR`` (the
default output's parent), ``KLING_POLL_INTERVAL`` (default 10 s), ``KLING_TIMEOUT`` (default 1800 s).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator, KlingVideoOperator

DOWNLOAD_DIR = os.path.abspath(
    os.environ.get("KLING_DOWNLOAD_DIR")
    or os.path.join(os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos")
)
DEFAULT_OUTPUT = os.path.join(DOWNLOAD_DIR, "chain")
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
TIMEOUT = timedelta(seconds=float(os.environ.get("KLING_TIMEOUT", "1800")))

with DAG(
    dag_id="example_kling_chain",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "poll_interval": POLL_INTERVAL},
    params={
        "prompt": Param(
            "A paper boat drifting down a rain-filled gutter, close-up, soft morning light",
            type="string",
            description="What the first clip shows.",
        ),
        "style": Param(
            "Make it a hand-painted watercolour, keeping the motion",
            type="string",
            description="How the edit restyles the first clip.",
        ),
        "output": Param(
            DEFAULT_OUTPUT,
            type="string",
            description="Where both videos go: a local folder or an object-storage folder (s3://conn@bucket/prefix/).",
        ),
    },
) as dag:
    clip = KlingTextToVideoOperator(
        task_id="clip",
        model="kling-video/v1.6/pro/text-to-video",
        prompt="{{ params.prompt }}",
        aspect_ratio="16:9",
        duration=5,
        download_to="{{ params.output }}/clips/",
        timeout=TIMEOUT,
    )
    restyle = KlingVideoOperator(
        task_id="restyle",
        model="klingai/video-o1-video-to-video-edit",
        prompt="{{ params.style }}",
        # The first task's result: its stored video becomes this request's video_url.
        parameters={"video_url": clip.output, "keep_audio": False},
        download_to="{{ params.output }}/edits/",
        timeout=TIMEOUT,
    )
