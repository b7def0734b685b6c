"""Each form a media input may take, resolved by ``utils.inputs.resolve_media_inputs`` before any POST.

Against the emulator (upstream generations, the POST count) and the suite's S3 server (moto over real
HTTP, reached through Airflow's ObjectStoragePath): local files staged once by content, objects
presigned, upstream results by their stored video or a fresh service URL, and the error when a file
cannot be sent. The request's fingerprint counts each input by what it is, never by a signed URL.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import requests

from tests.support.connections import API_KEY, set_connection
from tests.support.dags import SAMPLE_MP4, posts
from tests.support.s3_server import s3_fixture, s3_server_fixture  # noqa: F401  (fixtures)

AVATAR = "klingai/avatar-pro"
EDIT = "klingai/video-o1-video-to-video-edit"
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + hashlib.sha256(b"voice").digest() * 32
FACE = "https://images.example.org/face.png"


def _resolve(fields: dict[str, Any]) -> Any:
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.utils.inputs import resolve_media_inputs

    with KlingHook() as hook:
        return resolve_media_inputs(fields, hook)


def _fingerprint(inputs: Any) -> str:
    from airflow_provider_kling.schemas.request import build_request

    return str(inputs.stabilize(build_request(inputs.fields)).fingerprint())


def _staging(emulator: Any, s3: Any) -> str:
    staging = f"{s3.url}/kling-inputs/"
    set_connection(
        "kling_default", host=emulator.base_url, password=API_KEY, extra={"input_staging": staging}
    )
    return staging


@pytest.mark.parametrize("as_path", [False, True], ids=["text", "pathlike"])
def test_a_local_audio_file_is_staged_once_by_its_content_and_presigned(emulator, s3, tmp_path, as_path):
    _staging(emulator, s3)
    audio = tmp_path / "voice.mp3"
    audio.write_bytes(MP3)
    given = audio if as_path else str(audio)
    first = _resolve({"model": AVATAR, "image_url": FACE, "audio_url": given})
    key = f"kling-inputs/{hashlib.sha256(MP3).hexdigest()}.mp3"
    url = first.fields["audio_url"]
    assert url.startswith(f"{s3.server.endpoint_url}/{s3.name}/{key}?")
    assert requests.get(url, timeout=10).content == MP3
    assert first.identities == {"audio_url": f"sha256:{hashlib.sha256(MP3).hexdigest()}"}
    assert first.staged == 1
    uploaded = s3.server.client().head_object(Bucket=s3.name, Key=key)["ETag"]

    # Again (a re-run): the same bytes are found where they are, nothing is uploaded; the URL is
    # signed anew, the fingerprint is the same.
    second = _resolve({"model": AVATAR, "image_url": FACE, "audio_url": given})
    assert second.staged == 0
    assert s3.keys("kling-inputs/") == [key]
    assert s3.server.client().head_object(Bucket=s3.name, Key=key)["ETag"] == uploaded
    assert _fingerprint(second) == _fingerprint(first)
    # Other bytes are another input.
    audio.write_bytes(MP3 + b"more")
    assert _fingerprint(_resolve({"model": AVATAR, "image_url": FACE, "audio_url": given})) != _fingerprint(
        first
    )


@pytest.mark.parametrize("as_object", [False, True], ids=["url", "objectstoragepath"])
def test_an_object_in_storage_is_presigned_and_counted_by_object_and_etag(emulator, s3, as_object):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    ref = s3.put("voices/hello.mp3", MP3)
    given = ObjectStoragePath(ref) if as_object else ref
    first = _resolve({"model": AVATAR, "image_url": FACE, "audio_url": given})
    url = first.fields["audio_url"]
    assert url.startswith(f"{s3.server.endpoint_url}/{s3.name}/voices/hello.mp3?")
    assert requests.get(url, timeout=10).content == MP3
    assert "#ETag=" in first.identities["audio_url"]
    assert s3.keys("kling-inputs/") == []  # no staging needed, none configured
    assert _fingerprint(first) == _fingerprint(
        _resolve({"model": AVATAR, "image_url": FACE, "audio_url": given})
    )
    s3.put("voices/hello.mp3", MP3 + b"changed")
    assert _fingerprint(_resolve({"model": AVATAR, "image_url": FACE, "audio_url": given})) != _fingerprint(
        first
    )


def _result(generation_id: str, video_path: str | None) -> dict[str, Any]:
    """A Kling task's XCom result dict, as the operators return it."""
    from airflow_provider_kling.schemas.generation import Generation, GenerationStatus
    from airflow_provider_kling.utils.results import result_dict

    done = Generation(id=generation_id, status=GenerationStatus.COMPLETED, raw_status="completed")
    return result_dict(done, "kling-video/v1/standard/image-to-video", video_path)


def test_an_upstream_result_stored_in_object_storage_is_presigned_and_counted_by_its_generation(emulator, s3):
    stored = s3.put("videos/gen-1.mp4", SAMPLE_MP4)
    upstream = _result("gen-1", stored)
    inputs = _resolve(
        {
            "model": EDIT,
            "prompt": "p",
            "video_url": upstream,
            "elements": [{"reference_image_urls": [FACE], "video_url": upstream}],
        }
    )
    for url in (inputs.fields["video_url"], inputs.fields["elements"][0]["video_url"]):
        assert url.startswith(f"{s3.server.endpoint_url}/{s3.name}/videos/gen-1.mp4?")
        assert requests.get(url, timeout=10).content == SAMPLE_MP4
    assert inputs.identities == {
        "video_url": "kling-generation:gen-1",
        "elements.0.video_url": "kling-generation:gen-1",
    }
    assert posts(emulator) == []
    assert emulator.count("GET") == 0  # the service was not asked


def test_an_upstream_result_stored_locally_is_staged(emulator, s3, tmp_path):
    _staging(emulator, s3)
    local = tmp_path / "gen-2.mp4"
    local.write_bytes(SAMPLE_MP4)
    inputs = _resolve({"model": EDIT, "prompt": "p", "video_url": _result("gen-2", str(local))})
    key = f"kling-inputs/{hashlib.sha256(SAMPLE_MP4).hexdigest()}.mp4"
    assert inputs.fields["video_url"].startswith(f"{s3.server.endpoint_url}/{s3.name}/{key}?")
    assert requests.get(inputs.fields["video_url"], timeout=10).content == SAMPLE_MP4
    assert inputs.identities == {"video_url": "kling-generation:gen-2"}


def test_an_upstream_result_without_a_stored_video_reads_a_fresh_url_from_the_service(emulator, s3, tmp_path):
    from airflow_provider_kling.hooks.kling import KlingHook

    with KlingHook() as hook:
        submitted = hook.submit(
            {"model": "kling-video/v1/standard/image-to-video", "image_url": FACE, "prompt": "fresh"}
        )
        done = hook.wait_for_generation(submitted.id, poll_interval=0.2, timeout=60)
    gets = emulator.count("GET")
    upstream = _result(submitted.id, None)
    inputs = _resolve({"model": EDIT, "prompt": "p", "video_url": upstream})
    assert inputs.fields["video_url"] == done.video_url
    assert emulator.count("GET") == gets + 1
    assert len(posts(emulator)) == 1  # the upstream generation's own POST only
    # Stored or not, the same generation is the same input.
    stored = s3.put("videos/any.mp4", SAMPLE_MP4)
    again = _resolve({"model": EDIT, "prompt": "p", "video_url": _result(submitted.id, stored)})
    assert _fingerprint(again) == _fingerprint(inputs)


def test_a_local_file_with_no_way_to_send_it_is_refused_before_any_post(emulator, tmp_path):
    from airflow_provider_kling.exceptions import KlingValidationError
    from airflow_provider_kling.operators.kling import KlingVideoOperator

    audio = tmp_path / "voice.mp3"
    audio.write_bytes(MP3)
    operator = KlingVideoOperator(
        task_id="avatar", model=AVATAR, parameters={"image_url": FACE, "audio_url": str(audio)}
    )
    with pytest.raises(KlingValidationError) as caught:
        operator.build_request()
    message = str(caught.value)
    assert "audio_url" in message
    assert str(audio) in message
    assert "input_staging" in message
    assert "http(s) URL" in message
    assert posts(emulator) == []


def test_an_upstream_result_in_an_image_field_is_refused(emulator):
    from airflow_provider_kling.exceptions import KlingValidationError

    with pytest.raises(KlingValidationError, match=r"image_url.*gen-3.*takes an image"):
        _resolve({"model": AVATAR, "image_url": _result("gen-3", None), "audio_url": "https://a.org/x.mp3"})
    assert emulator.count("GET") == 0


def test_skip_existing_defaults_to_true_where_download_to_is_set(tmp_path):
    from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

    def operator(**kwargs: Any) -> Any:
        return KlingTextToVideoOperator(task_id="t", prompt="p", **kwargs)

    assert operator(download_to=str(tmp_path)).reuses_existing() is True
    assert operator().reuses_existing() is False
    assert operator(download_to=str(tmp_path), skip_existing=False).reuses_existing() is False


def test_the_input_staging_extra_must_be_a_presignable_prefix(emulator):
    from airflow_provider_kling.exceptions import KlingConfigError
    from airflow_provider_kling.hooks.kling import KlingHook

    set_connection(
        "kling_default", host=emulator.base_url, password=API_KEY, extra={"input_staging": "/tmp/x"}
    )
    with KlingHook() as hook, pytest.raises(KlingConfigError, match=r"input_staging.*s3://"):
        _ = hook.endpoint
    set_connection(
        "kling_default", host=emulator.base_url, password=API_KEY, extra={"input_staging": "s3://b/in"}
    )
    with KlingHook() as hook:
        assert hook.endpoint.input_staging == "s3://b/in/"


def test_the_resolver_leaves_the_callers_fields_untouched(emulator, s3):
    ref = s3.put("voices/a.mp3", MP3)
    fields = {
        "model": EDIT,
        "prompt": "p",
        "video_url": "https://v.org/a.mp4",
        "elements": [{"video_url": ref}],
    }
    before = repr(fields)
    inputs = _resolve(fields)
    assert repr(fields) == before
    assert inputs.fields["elements"][0]["video_url"].startswith("http://127.0.0.1:")
    assert inputs.fields["video_url"] == "https://v.org/a.mp4"


def test_check_only_reads_uploads_and_signs_nothing_and_names_what_was_written(emulator, s3, tmp_path):
    """A batch's validation: each input stands in as a placeholder naming it; nothing leaves the host."""
    from airflow_provider_kling.exceptions import KlingValidationError
    from airflow_provider_kling.utils.inputs import STAND_IN, resolve_media_inputs

    _staging(emulator, s3)
    audio = tmp_path / "voice.mp3"
    audio.write_bytes(MP3)
    fields = {"model": AVATAR, "image_url": FACE, "audio_url": str(audio)}
    checked = resolve_media_inputs(fields, None, check_only=True)
    assert checked.fields["audio_url"].startswith(f"{STAND_IN}audio/")
    assert checked.fields["audio_url"].endswith(".mp3")
    assert checked.identities == {"audio_url": checked.fields["audio_url"]}
    edit = {"model": EDIT, "prompt": "p", "video_url": {"generation_id": "g-1", "status": "completed"}}
    assert resolve_media_inputs(edit, None, check_only=True).fields["video_url"].startswith(STAND_IN)
    assert s3.keys() == []
    assert emulator.requests == []

    # Another file is another stand-in (a changed row is a new request); a missing one is named.
    (tmp_path / "other.mp3").write_bytes(MP3)
    other = resolve_media_inputs({**fields, "audio_url": str(tmp_path / "other.mp3")}, None, check_only=True)
    assert other.fields["audio_url"] != checked.fields["audio_url"]
    with pytest.raises(KlingValidationError) as caught:
        resolve_media_inputs({**fields, "audio_url": str(tmp_path / "gone.mp3")}, None, check_only=True)
    assert caught.value.errors == [
        (
            "audio_url",
            f"names the local file {str(tmp_path / 'gone.mp3')!r}, which does not exist (an http(s) URL or "
            "an object-storage URL is also accepted)",
        )
    ]


@pytest.mark.parametrize(
    ("base", "written", "expected"),
    [
        ("/data/in/", "clips/a.mp3", "/data/in/clips/a.mp3"),
        ("/data/in/", "../shared/a.mp3", "/data/shared/a.mp3"),
        ("s3://conn@bucket/in/", "clips/a.mp3", "s3://conn@bucket/in/clips/a.mp3"),
        ("s3://bucket/in/", "./a.mp3", "s3://bucket/in/a.mp3"),
        ("/data/in/", "/abs/a.mp3", "/abs/a.mp3"),
        ("/data/in/", "~/a.mp3", "~/a.mp3"),
        ("/data/in/", "s3://b/a.mp3", "s3://b/a.mp3"),
        ("/data/in/", "https://x.org/a.mp3", "https://x.org/a.mp3"),
        (None, "clips/a.mp3", "clips/a.mp3"),
    ],
)
def test_anchor_paths_reads_relative_paths_against_the_folder_given(base, written, expected):
    from airflow_provider_kling.utils.inputs import anchor_paths

    fields = {"model": AVATAR, "image_url": written, "audio_url": written, "prompt": "clips/a.mp3"}
    anchored = anchor_paths(fields, base)
    assert (anchored["image_url"], anchored["audio_url"]) == (expected, expected)
    assert anchored["prompt"] == "clips/a.mp3"
    assert fields["audio_url"] == written
