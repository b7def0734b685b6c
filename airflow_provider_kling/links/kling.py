"""The operator extra link to a generated video."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

#: XCom key under which the operator and sensor push the video URL for the link.
VIDEO_URL_XCOM_KEY = "kling_video_url"


class KlingVideoLink(BaseOperatorLink):
    """ "Kling video": opens the finished task's generated video.

    A video the task downloaded (or a batch's videos) opens in the "Kling videos" gallery of the
    api-server, filtered to this task (Airflow 3.1+): a page that lasts, where the service's signed
    URL expires. Otherwise the link is the service's URL (or the storage console's page), as the task
    pushed it under :data:`VIDEO_URL_XCOM_KEY`.
    """

    name: ClassVar[str] = "Kling video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        if page := _gallery_page(ti_key):
            return page
        url = XCom.get_value(key=VIDEO_URL_XCOM_KEY, ti_key=ti_key)
        return str(url) if url else ""


def _stored(result: Any) -> bool:
    """Whether a task's result names a downloaded video (or is a batch's summary of stored videos)."""
    if not isinstance(result, dict):
        return False
    if result.get("generation_id") and isinstance(result.get("video_path"), str) and result["video_path"]:
        return True
    return isinstance(result.get("results"), str) and "output_prefix" in result


def _gallery_page(ti_key: Any) -> str | None:
    """The gallery filtered to the task instance, when it stored a video and this Airflow has the gallery."""
    from urllib.parse import urlencode

    from airflow_provider_kling.plugins import URL_PREFIX, supports_gallery

    if not supports_gallery():
        return None
    try:
        result = XCom.get_value(key="return_value", ti_key=ti_key)
    except Exception:  # no result (the task failed before returning)
        return None
    if not _stored(result):
        return None
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    query = {"dag_id": ti_key.dag_id, "run_id": ti_key.run_id, "task_id": ti_key.task_id}
    return f"{base}{URL_PREFIX}/?{urlencode(query)}"
