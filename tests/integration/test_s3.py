"""Object storage against a real S3 API server (moto's server mode, tests/support/s3_server.py).

The provider reaches it only through Airflow's ObjectStoragePath and the Amazon provider's ``aws``
connection with an ``endpoint_url``: videos streamed to ``s3://`` with bounded memory and no partial
object on failure, private images handed to the service as presigned URLs (masked, never stored),
and ``skip_existing`` re-runs that pay nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.connections import API_KEY, connection_json
from tests.support.s3_server import CONN_ID, SECRET_KEY, connection, s3_fixture, s3_server_fixture  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(b"cat").digest() * 40
MB = 1024 * 1024

_CHILD = r"""
import json, sys, time
from pathlib import Path

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import Generation, GenerationStatus
from airflow_provider_kling.operators.kling import download
from airflow.providers.common.compat.sdk import ObjectStoragePath

size, base_url, dest = int(sys.argv[1]), sys.argv[2], sys.argv[3]
hook = KlingHook("kling_default")
# The S3 client and its pools exist before measuring.
ObjectStoragePath(dest.rsplit("/videos/", 1)[0] + "/warm-up").write_bytes(b"x")

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
before = status("VmRSS")
gen = Generation(id=f"gen-{size}", status=GenerationStatus.COMPLETED,
                 video_url=f"{base_url}/_emulator/blob/{size}", file_size=size)
path = download(hook, gen, dest, False, sidecar={"request": "r"})
print(json.dumps({"path": path, "growth": status("VmHWM") - before}))
"""


def _child_env(emulator: Any, s3_server: Any) -> dict[str, str]:
    env = os.environ.copy()
    env["AIRFLOW_CONN_KLING_DEFAULT"] = connection_json(host=emulator.base_url, password=API_KEY)
    env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(connection(s3_server.endpoint_url))
    return env


# 256 MB proves the memory bound of the S3 upload stream (fsspec and botocore, not Airflow's minor):
# once on 3.3 and 2.11; 1 MB runs the same path on every minor.
@pytest.mark.parametrize(
    "size",
    [
        pytest.param(1 * MB, id="1MB"),
        pytest.param(256 * MB, id="256MB", marks=pytest.mark.same_on_every_minor),
    ],
)
def test_download_streams_to_s3_with_bounded_memory(emulator, s3, s3_server, size):
    from airflow_provider_kling.emulator.app import blob_bytes

    dest = f"{s3.url}/videos/"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(size), emulator.base_url, dest],
        env=_child_env(emulator, s3_server),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["path"] == f"{dest}gen-{size}.mp4"
    key = f"videos/gen-{size}.mp4"
    assert s3.keys("videos/") == sorted([key, f"{key}.kling.json"])  # no temporary part left
    assert s3.size(key) == size
    # Content checked at the start, the middle and the end (byte i is (i % 251) + 1).
    client = s3.server.client()
    for start in (0, size // 2, size - 4096):
        got = client.get_object(Bucket=s3.name, Key=key, Range=f"bytes={start}-{start + 4095}")["Body"].read()
        assert got == blob_bytes(start, 4096)
    sidecar = json.loads(s3.get(f"{key}.kling.json"))
    assert sidecar["file_size"] == size
    assert sidecar["generation_id"] == f"gen-{size}"
    assert out["growth"] < 64 * MB, f"peak RSS grew {out['growth'] / MB:.1f} MB"


@pytest.mark.parametrize("fault", ["reset_mid", "wrong_length"])
def test_failed_upload_leaves_no_object(emulator, s3, fault):
    from airflow_provider_kling.exceptions import KlingError
    from airflow_provider_kling.hooks.kling import KlingHook

    emulator.inject(fault, times=None, path_prefix="/_emulator/blob")
    size = 12 * MB
    with KlingHook() as hook, pytest.raises(KlingError):
        hook.download_video(
            f"{emulator.base_url}/_emulator/blob/{size}",
            f"{s3.url}/videos/",
            file_name="clip.mp4",
            expected_size=size,
        )
    assert s3.keys() == []  # neither the video nor a temporary part is visible


def run_s3_dag(image: str, dest: str, prompt: str = "s3: a cat blinks") -> Any:
    from tests.support.dags import TEST_DAGS, load_dag_file, run_dag

    os.environ["KLING_S3_IMAGE"] = image
    os.environ["KLING_S3_DEST"] = dest
    try:
        module = load_dag_file(TEST_DAGS / "kling_s3.py")
        return run_dag(module.dag, run_conf={"prompt": prompt})
    finally:
        os.environ.pop("KLING_S3_IMAGE", None)
        os.environ.pop("KLING_S3_DEST", None)


@pytest.mark.airflow3
def test_private_image_is_presigned_video_lands_in_s3_and_a_rerun_pays_nothing(emulator, airflow_db, s3):
    from tests.support.dags import posts, task_state_rows

    image = s3.put("private/cat.png", PNG)
    dest = f"{s3.url}/videos/"
    first = run_s3_dag(image, dest)
    assert first.state == "success"
    out = first.xcom("to_s3")
    (post,) = posts(emulator)
    sent = post.json["image_url"]
    # The service got a presigned GET URL to the private object, not its bytes, and it works.
    assert sent.startswith(f"{s3.server.endpoint_url}/{s3.name}/private/cat.png?")
    assert "Signature=" in sent or "X-Amz-Signature=" in sent
    fetched = requests.get(sent, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == PNG
    # The video is in the bucket under the key the XCom names; its size is checked.
    key = out["video_path"].split(f"{s3.name}/", 1)[1]
    assert out["video_path"] == f"{dest}{Path(key).name}"
    assert s3.size(key) == out["file_size"]
    assert out["reused"] is False
    # The presigned URL is kept nowhere: no XCom, no task state, no trigger row.
    signature = sent.split("?", 1)[1]
    stored = json.dumps(
        [
            list(first.xcoms.items()),
            task_state_rows(first.dag_id, first.run_id),
            list(first.triggers.values()),
        ],
        default=str,
    )
    assert signature not in stored
    assert "Signature" not in stored
    assert SECRET_KEY not in stored
    # It is registered with the secrets masker: a log line holding it shows *** instead. The masker
    # moved between minors (airflow.sdk._shared from 3.1); the compat provider finds it on each.
    from airflow.providers.common.compat.sdk import redact

    assert sent not in str(redact(f"fetching {sent}"))

    # The same run again: the video is already there from the same request; nothing is paid.
    emulator.reset()
    again = run_s3_dag(image, dest)
    assert again.state == "success"
    reused = again.xcom("to_s3")
    assert reused["reused"] is True
    assert reused["video_path"] == out["video_path"]
    assert reused["generation_id"] == out["generation_id"]
    assert posts(emulator) == []

    # A changed image is a new request: a new generation.
    s3.put("private/cat.png", PNG + b"changed")
    third = run_s3_dag(image, dest)
    assert third.xcom("to_s3")["reused"] is False
    assert len(posts(emulator)) == 1


def test_presigned_fingerprint_is_stable_and_follows_the_object(s3):
    from airflow_provider_kling.models import build_request, resolve_file_inputs

    image = s3.put("private/dog.jpg", b"\xff\xd8\xff" + b"j" * 500)
    request = build_request(
        {"model": "kling-video/v1/standard/image-to-video", "image_url": image, "prompt": "p"}
    )
    first = resolve_file_inputs(request)
    # Signed again with another validity: another signature (as a retry minutes later gets one).
    second = resolve_file_inputs(request, presign_seconds=1800)
    assert first.fields["image_url"].startswith("http://127.0.0.1:")
    assert first.fields["image_url"] != second.fields["image_url"]
    assert first.fingerprint() == second.fingerprint()
    s3.put("private/dog.jpg", b"\xff\xd8\xff" + b"k" * 500)
    assert resolve_file_inputs(request).fingerprint() != first.fingerprint()
    # Without signing (presign=False, or a store that cannot sign) the bytes go as Base64, as before.
    plain = resolve_file_inputs(request, presign=False)
    assert plain.fields["image_url"].startswith("data:image/jpeg;base64,")


def _signature(url: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(url).query)
    return (query.get("Signature") or query.get("X-Amz-Signature") or [""])[0]


def test_a_presigned_input_is_fingerprinted_by_object_and_etag_not_by_signature(s3):
    """Two signatures that differ (another expiry) for one object: one fingerprint."""
    from airflow_provider_kling.models import build_request, resolve_file_inputs

    image = s3.put("private/owl.png", PNG)
    request = build_request(
        {"model": "kling-video/v1/standard/image-to-video", "image_url": image, "prompt": "an owl blinks"}
    )
    short = resolve_file_inputs(request, presign_seconds=60)
    long = resolve_file_inputs(request, presign_seconds=3600)
    assert _signature(short.fields["image_url"])
    assert _signature(short.fields["image_url"]) != _signature(long.fields["image_url"])
    assert short.fingerprint() == long.fingerprint()
    # What it counts is the object and its ETag.
    etag = s3.server.client().head_object(Bucket=s3.name, Key="private/owl.png")["ETag"].strip('"')
    assert short.stable_fields is not None
    assert short.stable_fields["image_url"] == f"{image}#ETag={etag}"


def test_the_fingerprint_does_not_depend_on_whether_signing_worked(s3, monkeypatch):
    """Signed on one try, sent as bytes on the next (signing failed, or presign_inputs=False): one request."""
    import s3fs

    from airflow_provider_kling.models import build_request, resolve_file_inputs

    image = s3.put("private/fox.png", PNG)
    request = build_request(
        {"model": "kling-video/v1/standard/image-to-video", "image_url": image, "prompt": "a fox yawns"}
    )
    signed = resolve_file_inputs(request)
    assert signed.fields["image_url"].startswith(s3.server.endpoint_url)
    unsigned = resolve_file_inputs(request, presign=False)
    assert unsigned.fields["image_url"].startswith("data:image/png;base64,")

    def cannot_sign(self: Any, path: str, expiration: int = 100, **kwargs: Any) -> str:
        raise NotImplementedError("these credentials cannot sign")

    with monkeypatch.context() as patched:
        patched.setattr(s3fs.S3FileSystem, "sign", cannot_sign)
        failed_signing = resolve_file_inputs(request)
    assert failed_signing.fields["image_url"] == unsigned.fields["image_url"]  # sent as its bytes

    assert signed.fingerprint() == unsigned.fingerprint() == failed_signing.fingerprint()

    # A changed object is a new request, however it is sent.
    s3.put("private/fox.png", PNG + b"changed")
    assert resolve_file_inputs(request).fingerprint() != signed.fingerprint()
    changed = resolve_file_inputs(request, presign=False)
    assert changed.fingerprint() != unsigned.fingerprint()
    assert changed.fingerprint() == resolve_file_inputs(request).fingerprint()


def test_an_object_that_is_not_an_image_is_refused_before_anything_is_sent(s3):
    from airflow_provider_kling.exceptions import KlingValidationError
    from airflow_provider_kling.models import build_request, resolve_file_inputs

    bad = s3.put("private/notes.png", b"hello, not an image")
    request = build_request(
        {"model": "kling-video/v1/standard/image-to-video", "image_url": bad, "prompt": "p"}
    )
    with pytest.raises(KlingValidationError, match="neither a PNG nor a JPEG"):
        resolve_file_inputs(request)
    with pytest.raises(KlingValidationError, match="does not exist"):
        resolve_file_inputs(
            build_request(
                {"model": request.model, "image_url": f"{s3.url}/private/missing.png", "prompt": "p"}
            )
        )


class _TI:
    """What the batch reads of a task instance when it runs outside a DAG run (both Airflow majors)."""

    dag_id = "kling_batch_direct"
    task_id = "batch"
    map_index = -1

    def __init__(self, try_number: int) -> None:
        self.try_number = try_number
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_batch_keeps_its_state_in_the_bucket_without_a_task_state_store(emulator, s3):
    """As on Airflow 2.11: the paid ids live in state objects under the output prefix."""
    from airflow_provider_kling.operators.kling import KlingBatchVideoOperator
    from tests.support.dags import posts

    rows = [
        {
            "key": f"row-{i}",
            "image_url": "https://images.example.org/a.png",
            "prompt": f"direct {i} [seconds:0.3]",
        }
        for i in range(5)
    ]
    out = f"{s3.url}/videos/direct"

    def run(try_number: int) -> dict[str, Any]:
        op = KlingBatchVideoOperator(
            task_id="batch",
            manifest=rows,
            output_prefix=out,
            max_active=2,
            deferrable=False,
            poll_interval=0.2,
        )
        return op.execute({"ti": _TI(try_number), "run_id": "manual__1"})  # type: ignore[arg-type]

    first = run(1)
    assert (first["completed"], first["posts"], first["failed"]) == (5, 5, 0)
    assert first["state"].startswith(f"{out}/.kling-batch/")
    assert any(k.startswith("videos/direct/.kling-batch/") for k in s3.keys())
    assert len(posts(emulator, "direct")) == 5
    # A retry of the same task instance finds every row in the bucket's state: nothing is paid.
    again = run(2)
    assert (again["completed"], again["posts"]) == (5, 0)
    assert len(posts(emulator, "direct")) == 5
    results = [json.loads(line) for line in s3.get("videos/direct/results.jsonl").decode().splitlines()]
    assert [r["key"] for r in results] == [f"row-{i}" for i in range(5)]
