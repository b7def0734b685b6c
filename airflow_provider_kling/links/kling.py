"""The operator extra link to a generated video."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

#: XCom key under which the operator and sensor push the video URL for the link.
VIDEO_URL_XCOM_KEY = "kling_video_url"


class KlingVideoLink(BaseOperatorLink):
    """ "Kling video": opens the finished task's generated video."""

    name: ClassVar[str] = "Kling video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(key=VIDEO_URL_XCOM_KEY, ti_key=ti_key)
        return str(url) if url else ""
