"""A real S3 API server for tests: moto's server mode in its own process on a free loopback port.

Nothing is mocked inside the provider's process: the provider reaches the server through Airflow's
``ObjectStoragePath`` and the Amazon provider's ``aws`` connection (its ``endpoint_url`` extra), with
s3fs and botocore speaking real HTTP, as in a deployment. Use the fixtures::

    from tests.support.s3_server import s3_fixture, s3_server_fixture  # noqa: F401

``s3_server`` (session) starts the process once and stops it at the end; ``s3`` (per test) gives a
fresh, empty bucket and the connection ``kling_s3`` (an ``AIRFLOW_CONN_`` variable) pointing at it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import requests

#: The Airflow connection the tests' s3:// URLs name (``s3://kling_s3@bucket/key``).
CONN_ID = "kling_s3"
ACCESS_KEY = "kling-test-access"
SECRET_KEY = "kling-test-secret-3b9e"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connection(endpoint_url: str) -> dict[str, Any]:
    """The ``aws`` connection (as AIRFLOW_CONN_ JSON) that reaches the server."""
    return {
        "conn_type": "aws",
        "login": ACCESS_KEY,
        "password": SECRET_KEY,
        "extra": {"endpoint_url": endpoint_url, "region_name": REGION},
    }


class S3Server:
    """``python -m moto.server`` on 127.0.0.1, started and stopped as a process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> S3Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.endpoint_url}/moto-api/", timeout=2).status_code < 500:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("moto server did not answer in time")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def client(self) -> Any:
        """A boto3 S3 client for the test's own checks (the provider goes through Airflow)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )


@dataclass
class Bucket:
    """One test's bucket on the server."""

    server: S3Server
    name: str

    @property
    def url(self) -> str:
        """``s3://kling_s3@<bucket>``: the prefix of every URL the provider is given."""
        return f"s3://{CONN_ID}@{self.name}"

    def put(self, key: str, data: bytes) -> str:
        self.server.client().put_object(Bucket=self.name, Key=key, Body=data)
        return f"{self.url}/{key}"

    def get(self, key: str) -> bytes:
        return bytes(self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read())

    def keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket (under ``prefix``), sorted; pending multipart uploads are not objects."""
        paginator = self.server.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def size(self, key: str) -> int:
        return int(self.server.client().head_object(Bucket=self.name, Key=key)["ContentLength"])


_shared: S3Server | None = None


def shared_server(config: pytest.Config) -> S3Server:
    """The one server of the pytest session, whichever module asks first (stopped when pytest exits).

    One process for every module: Airflow caches the filesystem of a connection id for the life of
    the process, so a second server behind the same ``kling_s3`` connection would never be reached.
    """
    global _shared
    if _shared is None:
        _shared = S3Server().start()
        config.add_cleanup(_release)
    return _shared


def _release() -> None:
    global _shared
    server, _shared = _shared, None
    if server is not None:
        server.stop()


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture(request: pytest.FixtureRequest) -> S3Server:
    """The session's S3 API server process."""
    return shared_server(request.config)


@pytest.fixture(name="s3")
def s3_fixture(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new empty bucket and the ``kling_s3`` connection to it."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection(s3_server.endpoint_url)))
    name = f"kling-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    forget_cached_listings()
    return Bucket(s3_server, name)


def forget_cached_listings() -> None:
    """Drop s3fs's cached instances and listings, so a bucket made since an earlier test is seen.

    s3fs caches its filesystems and their directory listings per process; an earlier test's listing
    of the server's buckets would hide this test's new bucket.
    """
    try:
        import s3fs
    except ImportError:
        return
    for fs in list(s3fs.S3FileSystem._cache.values()):
        fs.invalidate_cache()
    s3fs.S3FileSystem.clear_instance_cache()
    for module in ("airflow.sdk.io.store", "airflow.io.store"):  # Airflow 3, Airflow 2
        try:
            cache = importlib.import_module(module)._STORE_CACHE
        except (ImportError, AttributeError):
            continue
        cache.clear()
