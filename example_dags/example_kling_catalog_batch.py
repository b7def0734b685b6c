"""A daily catalog run: a manifest in, one video per product out, safe to re-run.

As shipped it runs anywhere, by hand or daily: the manifest is ``data/sample_manifest.jsonl`` beside
this file (four products over four image-to-video models) and the videos go to a local folder under
the Airflow home. Both are params of the trigger form: ``manifest`` (a local path or an object-storage
URL such as ``s3://aws_default@my-catalog/manifests/products.jsonl``) and ``output`` (a local folder,
or an object-storage folder such as ``s3://aws_default@my-videos/catalog/``: the storage is chosen by
the URL's scheme, so nothing else changes). Each day's manifest is a JSON Lines file, one product per
line::

    {"key": "sku-1042", "image_url": "s3://aws_default@my-catalog/images/sku-1042.png",
     "prompt": "the mug turns slowly on a wooden table", "duration": "5"}

``key`` names the video (``<output>/<key>.mp4``, with its ``.kling.json`` sidecar); any field of the
model may be set per row (``model`` too). Private images in the bucket are handed to the service as
presigned URLs valid for a few minutes (masked in logs, never stored), so no image is made public.

``KlingBatchVideoOperator`` validates every row first as the manifest streams (one report naming the
first bad rows; nothing is paid), keeps at most ``max_active`` generations in flight (the service's
concurrency limit), waits in the triggerer, stores each video, and writes ``results.jsonl`` (key,
generation id, status, video, size, usage, error) next to them. XCom holds only a summary and the
results' URI.

Re-running (a clear, the next day on the same manifest) pays nothing for videos already there from
the same request (``skip_existing``); a row whose prompt or image changed is generated anew. A crashed
worker's retry reconnects to what was already paid for.

``aws_default`` in the URLs is the Amazon provider's connection (``s3://<conn_id>@<bucket>/<key>``):
install ``airflow-provider-kling[amazon]``.

Environment (defaults suit the real service): ``KLING_DOWNLOAD_DIR`` (the default output's parent),
``KLING_POLL_INTERVAL`` (default 10 s), ``KLING_MAX_ACTIVE`` (default 4). ``KLING_CATALOG_MANIFEST``
and ``KLING_CATALOG_OUTPUT`` replace the params with templates of a deployment's own, such as
``s3://aws_default@my-catalog/manifests/{{ ds }}.jsonl`` for scheduled runs (a manual run on
Airflow 3 has no ``ds``; ``{{ run_id }}`` always exists).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_kling.operators.kling import KlingBatchVideoOperator

DOWNLOAD_DIR = os.path.abspath(
    os.environ.get("KLING_DOWNLOAD_DIR")
    or os.path.join(os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos")
)
#: The sample shipped beside this file: four products, four image-to-video models.
SAMPLE_MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sample_manifest.jsonl")
#: Where the videos go unless the trigger form says otherwise (a local folder or an object-storage URL).
DEFAULT_OUTPUT = os.path.join(DOWNLOAD_DIR, "catalog")
# Params are not templates: a deployment that templates paths (the day, say) sets these instead.
MANIFEST = os.environ.get("KLING_CATALOG_MANIFEST", "{{ params.manifest }}")
OUTPUT = os.environ.get("KLING_CATALOG_OUTPUT", "{{ params.output }}")
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
MAX_ACTIVE = int(os.environ.get("KLING_MAX_ACTIVE", "4"))
#: The product shot of rows that give none (the service fetches public https URLs itself).
FALLBACK_IMAGE = "https://upload.wikimedia.org/wikipedia/commons/a/a8/Tour_Eiffel_Wikimedia_Commons.jpg"

with DAG(
    dag_id="example_kling_catalog_batch",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "kling"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "manifest": Param(
            SAMPLE_MANIFEST,
            type="string",
            description="The manifest: a JSONL or CSV file, local or in object storage (s3://conn@bucket/key).",
        ),
        "output": Param(
            DEFAULT_OUTPUT,
            type="string",
            description="Where the videos and results.jsonl go: a local folder or an object-storage folder.",
        ),
    },
) as dag:
    KlingBatchVideoOperator(
        task_id="catalog_videos",
        manifest=MANIFEST,
        output_prefix=OUTPUT,
        model="kling-video/v1.6/standard/image-to-video",
        parameters={"image_url": FALLBACK_IMAGE, "duration": "5"},
        max_active=MAX_ACTIVE,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        # A few bad products must not hold back the rest: they are listed in results.jsonl.
        fail_on_partial_error=False,
        timeout=timedelta(hours=12),
    )
