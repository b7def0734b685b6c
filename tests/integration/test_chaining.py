"""Chained generations: each step's output is the next step's input, and a re-run pays nothing.

The DAG (tests/dags/kling_chain.py) runs through ``dag.test()`` against the emulator: image-to-video
-> o1 video edit of its ``.output`` -> avatar-pro with a local audio file. Local audio and video go to
the connection's ``input_staging`` prefix on the suite's S3 server (moto, real HTTP) and reach the
service as presigned URLs, which the test fetches back and compares with the source files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.connections import API_KEY, set_connection
from tests.support.dags import TEST_DAGS, load_dag_file, posts, run_dag
from tests.support.s3_server import s3_fixture, s3_server_fixture  # noqa: F401  (fixtures)

PNG = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(b"lighthouse").digest() * 40
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + hashlib.sha256(b"speech").digest() * 64


def _sent(emulator: Any) -> dict[str, dict[str, Any]]:
    """The generation POSTs' bodies, by model."""
    return {post.json["model"]: post.json for post in posts(emulator)}


def _last_modified(s3: Any, key: str) -> Any:
    return s3.server.client().head_object(Bucket=s3.name, Key=key)["LastModified"]


@pytest.fixture
def chain(emulator, s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The chain's inputs on disk, its output folder, and ``kling_default`` with ``input_staging``."""
    image = tmp_path / "in" / "portrait.png"
    audio = tmp_path / "in" / "speech.mp3"
    image.parent.mkdir()
    image.write_bytes(PNG)
    audio.write_bytes(MP3)
    monkeypatch.setenv("KLING_TEST_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("KLING_CHAIN_IMAGE", str(image))
    monkeypatch.setenv("KLING_CHAIN_AUDIO", str(audio))
    staging = f"{s3.url}/kling-inputs/"
    set_connection(
        "kling_default", host=emulator.base_url, password=API_KEY, extra={"input_staging": staging}
    )
    return {"image": image, "audio": audio, "staging": staging}


@pytest.mark.airflow3
def test_a_chained_dag_feeds_each_output_to_the_next_step_and_its_rerun_sends_no_post(
    emulator, airflow_db, s3, chain
):
    dag = load_dag_file(TEST_DAGS / "kling_chain.py").dag
    first = run_dag(dag)
    assert first.state == "success"
    clip, edit, avatar = (first.xcom(t) for t in ("image_to_video", "edit", "avatar"))
    assert [clip["reused"], edit["reused"], avatar["reused"]] == [False, False, False]
    sent = _sent(emulator)
    assert len(posts(emulator)) == 3

    # The edit got the first step's video: staged once under its content hash, presigned.
    video = Path(clip["video_path"]).read_bytes()
    video_key = f"kling-inputs/{hashlib.sha256(video).hexdigest()}.mp4"
    video_url = sent["klingai/video-o1-video-to-video-edit"]["video_url"]
    assert video_url.startswith(f"{s3.server.endpoint_url}/{s3.name}/{video_key}?")
    assert "Signature=" in video_url
    assert requests.get(video_url, timeout=10).content == video

    # The avatar's local audio went the same way; its local image as a data URI (the field takes Base64).
    audio_key = f"kling-inputs/{hashlib.sha256(MP3).hexdigest()}.mp3"
    body = sent["klingai/avatar-pro"]
    assert body["audio_url"].startswith(f"{s3.server.endpoint_url}/{s3.name}/{audio_key}?")
    assert requests.get(body["audio_url"], timeout=10).content == MP3
    assert body["image_url"].startswith("data:image/png;base64,")
    assert s3.keys("kling-inputs/") == sorted([video_key, audio_key])
    staged_at = {key: _last_modified(s3, key) for key in s3.keys("kling-inputs/")}

    # No signed URL is kept in any XCom.
    stored = repr(list(first.xcoms.items()))
    assert video_url.split("?", 1)[1] not in stored
    assert "Signature" not in stored

    # Run again, end to end: every step finds its video from the same request; nothing is sent or uploaded.
    emulator.reset()
    again = run_dag(dag)
    assert again.state == "success"
    assert posts(emulator) == []
    for task_id, before in (("image_to_video", clip), ("edit", edit), ("avatar", avatar)):
        out = again.xcom(task_id)
        assert out["reused"] is True, task_id
        assert out["generation_id"] == before["generation_id"]
        assert out["video_path"] == before["video_path"]
    assert {key: _last_modified(s3, key) for key in s3.keys("kling-inputs/")} == staged_at


@pytest.mark.airflow3
def test_skip_existing_false_forces_a_new_generation_of_that_step_only(emulator, airflow_db, s3, chain):
    dag = load_dag_file(TEST_DAGS / "kling_chain.py").dag
    first = run_dag(dag)
    assert first.state == "success"
    emulator.reset()
    dag.get_task("edit").skip_existing = False
    forced = run_dag(dag)
    assert forced.state == "success"
    assert [p.json["model"] for p in posts(emulator)] == ["klingai/video-o1-video-to-video-edit"]
    assert forced.xcom("edit")["reused"] is False
    assert forced.xcom("edit")["generation_id"] != first.xcom("edit")["generation_id"]
    assert forced.xcom("avatar")["reused"] is True
