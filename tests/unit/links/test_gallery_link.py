"""The "Kling video" extra link, as Airflow stores it at the end of each task (``dag.test()``).

A downloaded video's link is its gallery page on the api-server (the gallery filtered to the DAG, run
and task), which lasts; the service's signed URL expires. Without a download the link stays the
service's URL.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_kling.links.kling import KlingVideoLink
from tests.support.dags import TEST_DAGS, load_dag_file, run_dag

pytestmark = pytest.mark.airflow3
API = "http://airflow.example.org:8080"


def test_a_downloaded_videos_link_is_its_gallery_page(
    emulator, airflow_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_kling.plugins import supports_gallery

    monkeypatch.setenv("KLING_TEST_OUT", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", API)
    result = run_dag(load_dag_file(TEST_DAGS / "kling_gallery_link.py").dag)
    assert result.state == "success", result.tis
    key = KlingVideoLink().xcom_key

    downloaded = result.xcom("downloaded")
    assert Path(downloaded["video_path"]).is_file()
    link = result.xcom("downloaded", key=key)
    if supports_gallery():
        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{API}/kling/"
        assert parse_qs(parts.query) == {
            "dag_id": ["kling_gallery_link"],
            "run_id": [result.run_id],
            "task_id": ["downloaded"],
        }
        assert emulator.base_url not in link
    else:  # no gallery before Airflow 3.1: the service's URL, as before
        assert link == downloaded["video_url"]

    # Without a download: the service's URL, as before.
    left = result.xcom("not_downloaded")
    assert left["video_path"] is None
    assert result.xcom("not_downloaded", key=key) == left["video_url"]
    assert left["video_url"].startswith(emulator.base_url)
