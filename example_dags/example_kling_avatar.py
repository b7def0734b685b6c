"""A talking avatar: a portrait and a speech recording become a lip-synced video.

``KlingVideoOperator`` submits any model of the catalog; its fields go in ``parameters`` and are
checked against the catalog before the paid POST. ``klingai/avatar-pro`` needs ``image_url`` (a face)
and ``audio_url`` (mp3, wav, m4a or aac, at most 5 MB); the video lasts as long as the audio. Both are
public https URLs the service fetches itself. The image may also be a local file or an object-storage
URL (``s3://...``), which the operator reads and sends as a Base64 data URI; the audio must be a URL.

Run as written (or trigger by hand and edit the prompt)::

    airflow dags test example_kling_avatar

Environment (defaults suit the real service): ``KLING_AVATAR_IMAGE_URL``, ``KLING_AUDIO_URL``,
``KLING_DOWNLOAD_DIR``, ``KLING_POLL_INTERVAL`` (default 10 s), ``KLING_TIMEOUT`` (default 1800 s).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_kling.operators.kling import KlingVideoOperator

MODEL = "klingai/avatar-pro"
#: A frontal portrait from Wikimedia Commons (its file page there gives the licence).
AVATAR_IMAGE_URL = os.environ.get(
    "KLING_AVATAR_IMAGE_URL",
    "https://upload.wikimedia.org/wikipedia/commons/a/a0/Andrzej_Person_Kancelaria_Senatu.jpg",
)
#: About 7 seconds of English speech from the LJ Speech dataset (public domain), a 22 kHz WAV.
AUDIO_URL = os.environ.get("KLING_AUDIO_URL", "https://keithito.com/LJ-Speech-Dataset/LJ037-0171.wav")
DOWNLOAD_DIR = os.environ.get("KLING_DOWNLOAD_DIR") or os.path.join(
    os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos"
)
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
TIMEOUT = timedelta(seconds=float(os.environ.get("KLING_TIMEOUT", "1800")))
PROMPT = "He speaks calmly to the camera with natural head movement and blinking"

with DAG(
    dag_id="example_kling_avatar",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
    params={"prompt": Param(PROMPT, type="string", description="How the avatar moves while speaking")},
) as dag:
    KlingVideoOperator(
        task_id="avatar",
        model=MODEL,
        prompt="{{ params.prompt }}",
        parameters={"image_url": AVATAR_IMAGE_URL, "audio_url": AUDIO_URL},
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
        download_to=os.path.join(DOWNLOAD_DIR, "avatar") + "/",
    )
