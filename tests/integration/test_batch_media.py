"""A batch row's media in every form a single task takes, through ``dag.test()`` of the batch DAG.

Against the emulator and the suite's S3 server (moto over real HTTP, through Airflow's
ObjectStoragePath): a local manifest whose rows name a local image and a local audio file by paths
relative to the manifest, an ``s3://`` video and an upstream Kling result. Local audio goes once to the
connection's ``input_staging`` under its content hash; every audio/video input reaches the service as a
presigned URL whose bytes are the source's. A re-run sends nothing and uploads nothing; a missing
file fails the batch's validation, naming the row, the field and the file, before any POST.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.connections import API_KEY, use_connection
from tests.support.dags import SAMPLE_MP4, TEST_DAGS, load_dag_file, posts, run_dag
from tests.support.opens import OPENED, watching_opens
from tests.support.s3_server import s3_fixture, s3_server_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.airflow3

AVATAR = "klingai/avatar-standard"
EDIT = "klingai/video-o1-video-to-video-edit"
PNG = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(b"batch face").digest() * 40
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + hashlib.sha256(b"batch voice").digest() * 64
UPSTREAM = SAMPLE_MP4 + b"upstream"


@pytest.fixture
def media(emulator, s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The rows' files beside the manifest, a video and an upstream result in S3, and staging."""
    folder = tmp_path / "in"
    (folder / "faces").mkdir(parents=True)
    (folder / "clips").mkdir()
    (folder / "faces" / "face.png").write_bytes(PNG)
    (folder / "clips" / "voice.mp3").write_bytes(MP3)
    staging = f"{s3.url}/kling-inputs/"
    use_connection(
        monkeypatch,
        "kling_default",
        host=emulator.base_url,
        password=API_KEY,
        extra={"input_staging": staging},
    )
    monkeypatch.setenv("KLING_BATCH_POLL", "0.3")
    monkeypatch.setenv("KLING_BATCH_RETRIES", "0")
    return {
        "folder": folder,
        "video": s3.put("sources/dance.mp4", SAMPLE_MP4),
        "upstream": s3.put("videos/upstream/clip.mp4", UPSTREAM),
        "out": tmp_path / "out",
    }


def _write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _run(manifest: str, out: Path, max_active: int = 4) -> Any:
    dag = load_dag_file(TEST_DAGS / "kling_batch.py").dag
    return run_dag(dag, run_conf={"manifest": manifest, "output_prefix": str(out), "max_active": max_active})


def _rows(media: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "key": "avatar",
            "model": AVATAR,
            "image_url": "faces/face.png",
            "audio_url": "clips/voice.mp3",
            "prompt": "batch media avatar [seconds:0.3]",
        },
        {
            "key": "edit",
            "model": EDIT,
            "video_url": media["video"],
            "prompt": "batch media edit [seconds:0.3]",
        },
        {
            "key": "chained",
            "model": EDIT,
            "video_url": {
                "generation_id": "gen-upstream-0001",
                "video_path": media["upstream"],
                "status": "completed",
            },
            "prompt": "batch media chained [seconds:0.3]",
        },
    ]


def _fetched(url: str, s3: Any, key: str) -> bytes:
    assert url.startswith(f"{s3.server.endpoint_url}/{s3.name}/{key}?"), url.split("?")[0]
    assert "Signature=" in url
    return bytes(requests.get(url, timeout=10).content)


def _staged(s3: Any) -> dict[str, Any]:
    client = s3.server.client()
    return {
        key: client.head_object(Bucket=s3.name, Key=key)["LastModified"] for key in s3.keys("kling-inputs/")
    }


def test_a_rows_local_files_objects_and_upstream_results_are_sent_as_fetchable_urls_and_a_rerun_pays_nothing(
    emulator, airflow_db, s3, media
):
    manifest = _write(media["folder"] / "manifest.jsonl", _rows(media))
    first = _run(manifest, media["out"])
    assert first.state == "success", first.tis
    summary = first.xcom("batch")
    assert (summary["posts"], summary["completed"], summary["failed"]) == (3, 3, 0)

    sent = {p.json["prompt"].split()[2]: p.json for p in posts(emulator, "batch media")}
    # The local audio, relative to the manifest: staged once under its content hash, presigned.
    audio_key = f"kling-inputs/{hashlib.sha256(MP3).hexdigest()}.mp3"
    assert _fetched(sent["avatar"]["audio_url"], s3, audio_key) == MP3
    # The local image, relative to the manifest: its bytes as a data URI (the field takes Base64).
    image = sent["avatar"]["image_url"]
    assert image.startswith("data:image/png;base64,")
    assert base64.b64decode(image.split(",", 1)[1]) == PNG
    # The s3:// video and the upstream result's stored video: presigned where they are.
    assert _fetched(sent["edit"]["video_url"], s3, "sources/dance.mp4") == SAMPLE_MP4
    assert _fetched(sent["chained"]["video_url"], s3, "videos/upstream/clip.mp4") == UPSTREAM
    staged = _staged(s3)
    assert list(staged) == [audio_key]

    # No signed URL in the results, the sidecars or the XCom.
    kept = (media["out"] / "results.jsonl").read_text()
    kept += "".join(p.read_text() for p in media["out"].glob("*.kling.json"))
    kept += repr(list(first.xcoms.items()))
    assert "Signature" not in kept
    assert "X-Amz-" not in kept

    # The same manifest again: every row's video is there from the same inputs (content hash, object
    # and ETag, generation id); nothing is sent and nothing is uploaded to input_staging again.
    emulator.reset()
    again = _run(manifest, media["out"])
    assert again.state == "success", again.tis
    summary = again.xcom("batch")
    assert (summary["posts"], summary["reused"], summary["completed"]) == (0, 3, 3)
    assert posts(emulator) == []
    assert _staged(s3) == staged


def test_rows_naming_one_local_file_read_it_once_for_its_hash(emulator, airflow_db, s3, media):
    """Eight avatar rows with one voice file, sent in one pass: the batch hashes and uploads it once
    (its submit threads wait for the first that names it); each row still sends its presigned URL."""
    rows = [
        {**_rows(media)[0], "key": f"avatar-{i}", "prompt": f"batch media avatar-{i} [seconds:0.3]"}
        for i in range(8)
    ]
    manifest = _write(media["folder"] / "manifest.jsonl", rows)
    voice = str(media["folder"] / "clips" / "voice.mp3")
    OPENED.clear()
    with watching_opens():
        result = _run(manifest, media["out"], max_active=8)
    assert result.state == "success", result.tis
    assert result.xcom("batch")["posts"] == 8
    audio_key = f"kling-inputs/{hashlib.sha256(MP3).hexdigest()}.mp3"
    assert list(_staged(s3)) == [audio_key]
    for sent in posts(emulator, "batch media"):
        assert _fetched(sent.json["audio_url"], s3, audio_key) == MP3
    # One reading for the hash and one for the upload (before: a hash for each row, and an upload for
    # each row that found it not there yet: 7 readings in one run seen).
    assert OPENED.count(voice) == 2, OPENED.count(voice)


def test_a_csv_manifest_takes_relative_paths_and_upstream_results_written_as_json(
    emulator, airflow_db, s3, media
):
    rows = _rows(media)
    rows[2]["video_url"] = json.dumps(rows[2]["video_url"])  # a cell holds the result as JSON
    text = io.StringIO()
    writer = csv.DictWriter(text, ["key", "model", "prompt", "image_url", "audio_url", "video_url"])
    writer.writeheader()
    writer.writerows(rows)
    manifest = media["folder"] / "manifest.csv"
    manifest.write_text(text.getvalue())
    result = _run(str(manifest), media["out"])
    assert result.state == "success", result.tis
    sent = {p.json["prompt"].split()[2]: p.json for p in posts(emulator, "batch media")}
    audio_key = f"kling-inputs/{hashlib.sha256(MP3).hexdigest()}.mp3"
    assert _fetched(sent["avatar"]["audio_url"], s3, audio_key) == MP3
    assert _fetched(sent["edit"]["video_url"], s3, "sources/dance.mp4") == SAMPLE_MP4
    assert _fetched(sent["chained"]["video_url"], s3, "videos/upstream/clip.mp4") == UPSTREAM


def test_a_changed_local_file_is_a_new_request(emulator, airflow_db, s3, media):
    manifest = _write(media["folder"] / "manifest.jsonl", _rows(media)[:1])
    assert _run(manifest, media["out"]).state == "success"
    (media["folder"] / "clips" / "voice.mp3").write_bytes(MP3 + b"retake")
    emulator.reset()
    again = _run(manifest, media["out"])
    assert again.state == "success", again.tis
    assert (again.xcom("batch")["posts"], again.xcom("batch")["reused"]) == (1, 0)
    audio_key = f"kling-inputs/{hashlib.sha256(MP3 + b'retake').hexdigest()}.mp3"
    assert _fetched(posts(emulator)[0].json["audio_url"], s3, audio_key) == MP3 + b"retake"


def test_a_missing_local_file_fails_validation_naming_row_field_and_file_before_any_post(
    emulator, airflow_db, s3, media, capfd
):
    rows = _rows(media)
    rows.append({**rows[0], "key": "lost", "audio_url": "clips/gone.mp3"})
    manifest = _write(media["folder"] / "manifest.jsonl", rows)
    result = _run(manifest, media["out"])
    assert result.state == "failed"
    assert posts(emulator) == []
    assert s3.keys("kling-inputs/") == []
    missing = str(media["folder"] / "clips" / "gone.mp3")
    logged = capfd.readouterr().out
    assert (
        f"row 3 (line 4, key 'lost') audio_url: names the local file {missing!r}, which does not exist"
        in (logged)
    )

    from airflow_provider_kling.batch.validation import ManifestInvalid, validate_manifest

    with pytest.raises(ManifestInvalid) as caught:
        validate_manifest(manifest, model=AVATAR, parameters=None, key_field="key", check_capabilities=True)
    assert caught.value.problems == [
        (
            "row 3 (line 4, key 'lost') audio_url",
            f"names the local file {missing!r}, which does not exist (an http(s) URL or an object-storage "
            "URL is also accepted)",
        )
    ]


def test_a_local_audio_file_without_input_staging_fails_validation_before_any_post(
    emulator, airflow_db, media, monkeypatch
):
    use_connection(monkeypatch, "kling_default", host=emulator.base_url, password=API_KEY)
    manifest = _write(media["folder"] / "manifest.jsonl", _rows(media)[:1])
    result = _run(manifest, media["out"])
    assert result.state == "failed"
    assert posts(emulator) == []

    from airflow_provider_kling.batch.validation import ManifestInvalid, validate_manifest
    from airflow_provider_kling.hooks.kling import KlingHook

    with KlingHook() as hook, pytest.raises(ManifestInvalid) as caught:
        validate_manifest(
            manifest, model=AVATAR, parameters=None, key_field="key", check_capabilities=True, hook=hook
        )
    (where, message), *_ = caught.value.problems
    assert where == "row 0 (line 1, key 'avatar') audio_url"
    assert "set the kling connection's extra input_staging" in message


def test_an_object_storage_manifests_relative_paths_are_read_under_its_prefix(
    emulator, airflow_db, s3, media
):
    s3.put("in/clips/voice.mp3", MP3)
    s3.put("in/faces/face.png", PNG)
    manifest = s3.put("in/manifest.jsonl", "".join(json.dumps(r) + "\n" for r in _rows(media)[:1]).encode())
    result = _run(manifest, media["out"])
    assert result.state == "success", result.tis
    body = posts(emulator)[0].json
    assert _fetched(body["audio_url"], s3, "in/clips/voice.mp3") == MP3
    assert _fetched(body["image_url"], s3, "in/faces/face.png") == PNG
    assert s3.keys("kling-inputs/") == []
