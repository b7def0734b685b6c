"""Text to video: a 5-second clip from a prompt alone, downloaded.

``KlingTextToVideoOperator`` takes any text-to-video model of the catalog (default
``kling-video/v1.6/standard/text-to-video``); this example uses ``klingai/v2.5-turbo/pro/text-to-video``.
The prompt and the aspect ratio are DAG params, so a run triggered by hand can change them in the
trigger form; run as written with::

    airflow dags test example_kling_text_to_video

Environment (defaults suit the real service): ``KLING_DOWNLOAD_DIR``, ``KLING_POLL_INTERVAL``
(default 10 s), ``KLING_TIMEOUT`` (default 1800 s). Nothing here needs an image: the model reads only
the text (see https://api.apilaplas.com for the service).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

MODEL = "klingai/v2.5-turbo/pro/text-to-video"
DOWNLOAD_DIR = os.environ.get("KLING_DOWNLOAD_DIR") or os.path.join(
    os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos"
)
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
TIMEOUT = timedelta(seconds=float(os.environ.get("KLING_TIMEOUT", "1800")))
PROMPT = "A paper boat drifts down a rain-soaked street at dusk, neon reflections, slow tracking shot"

with DAG(
    dag_id="example_kling_text_to_video",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
    params={
        "prompt": Param(PROMPT, type="string", minLength=1, description="The scene to generate"),
        "aspect_ratio": Param("16:9", enum=["16:9", "9:16", "1:1"], description="The video's shape"),
    },
) as dag:
    KlingTextToVideoOperator(
        task_id="text_to_video",
        model=MODEL,
        prompt="{{ params.prompt }}",
        aspect_ratio="{{ params.aspect_ratio }}",
        duration=5,
        negative_prompt="blur, distortion, text, watermark",
        cfg_scale=0.5,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
        download_to=os.path.join(DOWNLOAD_DIR, "text_to_video") + "/",
    )
