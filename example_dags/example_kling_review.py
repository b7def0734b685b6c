"""Human review before publishing (Airflow 3.1+): generate, let a person decide, then publish or redo.

1. ``generate`` makes a clip from the ``prompt`` param and downloads it.
2. ``review`` (a ``HITLBranchOperator`` from the standard provider) waits for a person. Its body shows
   the prompt, the model, what the clip cost and a link to the clip in the "Kling videos" gallery;
   the reviewer answers in the Airflow UI (or through the REST API:
   ``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails``).
3. **Publish** copies the video to ``<download folder>/published/``; **Regenerate** starts a new run
   of this DAG with the reviewer's ``revised_prompt`` (the original prompt when left empty), whose
   clip comes back to review in turn.

The download folder may be local or any ObjectStoragePath URL (``s3://bucket/videos``). On Airflow
before 3.1 (no human-in-the-loop operators) this file defines no DAG. Environment (defaults suit
the real service, https://api.apilaplas.com): ``KLING_DOWNLOAD_DIR``, ``KLING_POLL_INTERVAL``
(default 10 s), ``KLING_TIMEOUT`` (default 1800 s).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

import pendulum

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator, describe_usage

MODEL = "kling-video/v1.6/standard/text-to-video"
DOWNLOAD_DIR = os.environ.get("KLING_DOWNLOAD_DIR") or os.path.join(
    os.environ.get("AIRFLOW_HOME") or "/tmp", "kling_videos"
)
POLL_INTERVAL = float(os.environ.get("KLING_POLL_INTERVAL", "10"))
TIMEOUT = timedelta(seconds=float(os.environ.get("KLING_TIMEOUT", "1800")))
PROMPT = "A hot-air balloon rising over misty hills at sunrise, gentle camera pan"
#: Where each run downloads its clip, and where approved clips are copied.
REVIEW_DIR = DOWNLOAD_DIR.rstrip("/") + "/review"
PUBLISHED_DIR = DOWNLOAD_DIR.rstrip("/") + "/published"

REVIEW_BODY = """\
{% set video = ti.xcom_pull(task_ids='generate') %}
**Prompt:** {{ markdown_text(video.prompt) }}

**Model:** `{{ video.model }}` ({{ video.duration }} s)

**Cost:** {{ describe_usage(video.usage or {}) }}

**Video:** [watch it in the Kling videos gallery]({{ gallery_link(dag.dag_id, run_id) }})
{% if dag_run.conf.get('revises') %}
Revision of run {{ markdown_text(dag_run.conf['revises']) }}.
{% endif %}
Choose **Publish** to publish it, or **Regenerate** with a revised prompt below.
"""

try:  # Human-in-the-loop operators: Airflow 3.1+ with the standard provider.
    from airflow.providers.standard.operators.hitl import HITLBranchOperator
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from airflow.sdk import DAG, ObjectStoragePath, Param, task
except Exception:  # older Airflow raises ImportError or AirflowOptionalProviderFeatureException
    HITLBranchOperator = None


#: Characters with a meaning in Markdown (CommonMark and GitHub's tables, strikethrough); backslashed.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:])")


def markdown_text(value: Any) -> str:
    """``value`` as plain text inside a Markdown body: shown as typed, never as markup.

    Prompts and run ids are user input: ``**x**``, ``[link](javascript:...)`` or ``<img onerror=...>``
    in them must not become bold text, a link or HTML in the reviewer's page. Markdown's special
    characters are backslash-escaped, ``& < > " '`` become HTML entities (which Markdown shows as the
    characters), and line breaks become spaces so the value cannot start a heading, list or quote.

    :param value: any value; None becomes an empty string.
    """
    import html

    text = " ".join(str("" if value is None else value).split())
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", text), quote=True)


def gallery_link(dag_id: str, run_id: str) -> str:
    """The "Kling videos" gallery showing one run's videos (``[api] base_url`` + ``/kling/``)."""
    from urllib.parse import urlencode

    from airflow.providers.common.compat.sdk import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}/kling/?{urlencode({'dag_id': dag_id, 'run_id': run_id})}"


def storage_path(text: str) -> Any:
    """A local Path, or an ObjectStoragePath for a URL (``s3://...``)."""
    from pathlib import Path

    if "://" in text and not text.startswith("file://"):
        return ObjectStoragePath(text)
    return Path(text.removeprefix("file://"))


if HITLBranchOperator is not None:

    class KlingReviewOperator(HITLBranchOperator):
        """The review step; also keeps the reviewer's answer in XCom ``review`` for the next tasks."""

        def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
            if "error" not in event:  # before branching: skipping ends the task by an exception
                answer = {
                    "chosen_options": list(event["chosen_options"]),
                    "params_input": dict(event.get("params_input") or {}),
                }
                context["ti"].xcom_push(key="review", value=answer)
            return super().execute_complete(context=context, event=event)

    with DAG(
        dag_id="example_kling_review",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        tags=["example", "kling", "review"],
        doc_md=__doc__,
        params={
            "prompt": Param(PROMPT, type="string", minLength=1, description="The scene to generate"),
            "revises": Param(None, type=["null", "string"], description="The run this one revises"),
        },
        user_defined_macros={
            "describe_usage": describe_usage,
            "gallery_link": gallery_link,
            "markdown_text": markdown_text,
        },
    ) as dag:
        generate = KlingTextToVideoOperator(
            task_id="generate",
            model=MODEL,
            prompt="{{ params.prompt }}",
            duration=5,
            poll_interval=POLL_INTERVAL,
            timeout=TIMEOUT,
            download_to=REVIEW_DIR + "/{{ run_id }}/",
        )

        review = KlingReviewOperator(
            task_id="review",
            subject="Review the Kling video of {{ run_id }}",
            body=REVIEW_BODY,
            options=["Publish", "Regenerate"],
            options_mapping={"Publish": "publish", "Regenerate": "regenerate"},
            params={
                "revised_prompt": Param(
                    None,
                    type=["null", "string"],
                    description="For Regenerate: the new prompt (empty: the same one)",
                )
            },
            response_timeout=timedelta(days=7),
        )

        @task
        def publish(ti: Any = None) -> dict[str, Any]:
            """Copy the approved video to the ``published/`` prefix of the download folder."""
            import shutil

            video = ti.xcom_pull(task_ids="generate")
            source = storage_path(video["video_path"])
            target = storage_path(PUBLISHED_DIR) / source.name
            if not isinstance(target, ObjectStoragePath):  # object stores have no folders to make
                target.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            return {"generation_id": video["generation_id"], "source": str(source), "published": str(target)}

        regenerate = TriggerDagRunOperator(
            task_id="regenerate",
            trigger_dag_id="example_kling_review",
            conf={
                "prompt": "{{ ti.xcom_pull(task_ids='review', key='review')['params_input']"
                ".get('revised_prompt') or params.prompt }}",
                "revises": "{{ run_id }}",
            },
        )

        generate >> review >> [publish(), regenerate]
