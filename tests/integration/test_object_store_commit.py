"""Downloads to object storage commit the final key once, never a temporary object and a copy.

Against the suite's real S3 API server (tests/support/s3_server.py), through ObjectStoragePath and s3fs as in
a deployment. What the provider's S3 client asks of the server is observed through botocore's own
event system (each operation with its parameters), and at every one of those requests the bucket is
listed with a separate client: the listing is what any reader would see at that moment.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_kling.emulator import blob_bytes
from tests.support.s3_server import s3_fixture, s3_server_fixture  # noqa: F401  (fixtures)

MB = 1024 * 1024
#: Writes that put bytes on a key (a temporary object would show up as one of these on another key).
WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}


class S3Calls:
    """Every S3 operation the provider's client makes, and the bucket's keys just before each one."""

    def __init__(self, bucket: Any, fs: Any) -> None:
        self.bucket = bucket
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.seen_keys: set[str] = set()
        fs.connect()  # the client exists before it is watched
        fs.s3.meta.events.register("before-parameter-build.s3", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))
        self.seen_keys.update(self.bucket.keys())  # what a reader lists mid-write

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def keys_written(self) -> set[str]:
        return {params.get("Key", "") for name, params in self.calls if name in WRITES}


def _watch(s3: Any) -> S3Calls:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    # The same cached filesystem the provider's ObjectStoragePath for this connection uses.
    return S3Calls(s3, ObjectStoragePath(f"{s3.url}/videos/").fs)


@pytest.mark.parametrize("size", [1 * MB, 12 * MB], ids=["one-part", "multipart"])
def test_a_download_to_s3_writes_only_its_final_key_and_copies_nothing(emulator, s3, size):
    from airflow_provider_kling.hooks.kling import KlingHook

    watch = _watch(s3)
    with KlingHook() as hook:
        written = hook.download_video(
            f"{emulator.base_url}/_emulator/blob/{size}",
            f"{s3.url}/videos/",
            file_name="clip.mp4",
            expected_size=size,
        )
    key = "videos/clip.mp4"
    assert written == f"{s3.url}/{key}"
    assert watch.calls, "the provider's S3 client was not the one watched"
    assert not [n for n in watch.names() if "Copy" in n], watch.names()  # no server-side copy
    assert watch.keys_written() == {key}  # no temporary key was ever written
    assert watch.seen_keys <= {key}  # no listing at any moment showed another key
    assert "CompleteMultipartUpload" in watch.names() or "PutObject" in watch.names()
    assert s3.keys() == [key]
    assert s3.get(key) == blob_bytes(0, size)


@pytest.mark.parametrize("fault", ["reset_mid", "wrong_length"])
def test_a_failed_download_to_s3_commits_nothing_and_leaves_no_upload(emulator, s3, fault):
    from airflow_provider_kling.exceptions import KlingError
    from airflow_provider_kling.hooks.kling import KlingHook

    emulator.inject(fault, times=None, path_prefix="/_emulator/blob")
    watch = _watch(s3)
    size = 12 * MB
    with KlingHook(retry_min_wait=0.01, retry_max_wait=0.05) as hook, pytest.raises(KlingError):
        hook.download_video(
            f"{emulator.base_url}/_emulator/blob/{size}",
            f"{s3.url}/videos/",
            file_name="clip.mp4",
            expected_size=size,
        )
    names = watch.names()
    assert not {"CompleteMultipartUpload", "PutObject"} & set(names), names  # nothing ever visible
    assert watch.seen_keys == set()
    assert s3.keys() == []
    pending = s3.server.client().list_multipart_uploads(Bucket=s3.name).get("Uploads", [])
    assert pending == []  # every part sent was aborted


def test_a_store_that_cannot_defer_its_commit_keeps_the_move(emulator, tmp_path):
    """fsspec's memory filesystem ignores ``autocommit=False`` outside a transaction: detected, not used.

    Airflow registers no ``memory://`` store, so the destination is universal-pathlib's own path (an
    fsspec path with ``.fs``, as ObjectStoragePath is).
    """
    from upath import UPath

    from airflow_provider_kling.hooks.kling import KlingHook

    folder = UPath(f"memory://kling-commit-{tmp_path.name}/videos/")
    folder.mkdir(parents=True, exist_ok=True)
    with KlingHook() as hook:
        written = hook.download_video(
            f"{emulator.base_url}/_emulator/blob/{MB}", folder, file_name="clip.mp4", expected_size=MB
        )
    assert written.endswith("/videos/clip.mp4")
    assert [p.name for p in folder.iterdir()] == ["clip.mp4"]  # no temporary part left
    assert (folder / "clip.mp4").read_bytes() == blob_bytes(0, MB)
