"""Tests of the local Kling API emulator itself, through plain HTTP clients."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import pytest
import requests

from airflow_provider_kling.emulator import API_PATH, KlingEmulator, blob_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "emulator-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "kling-video/v1/standard/image-to-video"
BODY = {"model": MODEL, "image_url": "https://example.com/cat.png", "prompt": "a cat turns its head"}


@pytest.fixture
def emu() -> Iterator[KlingEmulator]:
    with KlingEmulator(generation_seconds=0.2) as emulator:
        yield emulator


def create(emu: KlingEmulator, **overrides: Any) -> requests.Response:
    return requests.post(emu.base_url + API_PATH, json={**BODY, **overrides}, headers=AUTH, timeout=5)


def poll(emu: KlingEmulator, gen_id: str) -> requests.Response:
    return requests.get(emu.base_url + API_PATH, params={"generation_id": gen_id}, headers=AUTH, timeout=5)


def force_complete(emu: KlingEmulator, gen_id: str) -> None:
    # Through the control API, with the id's "/" percent-encoded like a careful client would.
    r = requests.post(f"{emu.base_url}/_emulator/generations/{quote(gen_id, safe='')}/complete", timeout=5)
    assert r.status_code == 200, r.text


def assert_service_error(resp: requests.Response, status: int, path: str = API_PATH) -> dict[str, Any]:
    assert resp.status_code == status
    body = resp.json()
    assert set(body) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert body["statusCode"] == status
    assert body["path"] == path
    uuid.UUID(body["requestId"])
    datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    return body


def test_auth_errors_use_service_error_body(emu: KlingEmulator) -> None:
    no_key = requests.post(emu.base_url + API_PATH, json=BODY, timeout=5)
    assert_service_error(no_key, 401)
    wrong = requests.get(
        emu.base_url + API_PATH,
        params={"generation_id": "x"},
        headers={"Authorization": "Bearer wrong"},
        timeout=5,
    )
    assert_service_error(wrong, 401)
    assert emu.generations == {}
    assert [r.auth_ok for r in emu.requests] == [False, False]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"duration": "7"}, "Invalid enum value. Expected '5' | '10', received '7'"),
        ({"duration": 7}, "Invalid enum value. Expected '5' | '10', received '7'"),
        ({"cfg_scale": 1.5}, "cfg_scale: Number must be less than or equal to 1"),
        ({"prompt": None}, "prompt: Required"),
        # The catalog decides: a retired model and a field the model does not take are refused.
        ({"model": "kling-video/v1.5/standard/text-to-video"}, "Model kling-video/v1.5/standard/text-"),
        ({"static_mask": "https://example.com/m.png"}, "Body validation error"),
    ],
)
def test_body_validation(emu: KlingEmulator, overrides: dict[str, Any], message: str) -> None:
    body = assert_service_error(create(emu, **overrides), 400)
    assert body["message"].startswith(message)
    assert emu.generations == {}


def test_valid_durations_accepted(emu: KlingEmulator) -> None:
    for duration in ("5", "10", 5, 10):
        assert create(emu, duration=duration, cfg_scale=0.5).status_code == 201


def test_poll_errors(emu: KlingEmulator) -> None:
    missing = requests.get(emu.base_url + API_PATH, headers=AUTH, timeout=5)
    assert_service_error(missing, 400)
    assert_service_error(poll(emu, "no-such-id"), 404)


def test_lifecycle_and_download() -> None:
    with KlingEmulator(generation_seconds=1.0) as emu:
        created = create(emu)
        assert created.status_code == 201
        body = created.json()
        assert body["status"] == "queued"
        assert body["id"].endswith(":" + MODEL)
        assert body["meta"] == {"usage": {"tokens_used": 420000}}
        gen_id = body["id"]

        first = poll(emu, gen_id).json()
        assert first["status"] == "queued"
        assert first["video"] is None
        assert first["error"] is None
        time.sleep(0.3)
        assert poll(emu, gen_id).json()["status"] == "generating"
        time.sleep(0.8)
        done = poll(emu, gen_id).json()
        assert done["status"] == "completed"
        video = done["video"]
        assert video["content_type"] == "video/mp4"
        assert video["file_name"] == "output.mp4"
        assert video["duration"] == 5

        with requests.get(video["url"], stream=True, timeout=5) as dl:
            assert dl.status_code == 200
            assert dl.headers["Content-Type"] == "video/mp4"
            data = b"".join(dl.iter_content(4096))
        assert len(data) == video["file_size"] == int(dl.headers["Content-Length"])
        assert data == emu.video_data(gen_id)
        assert data[4:8] == b"ftyp"
        assert emu.count("GET", "/_emulator/videos") == 1


@pytest.mark.parametrize(
    ("prompt", "error"),
    [
        (
            "sad face [error]",
            {
                "detail": [
                    {
                        "loc": ["body", "image_url"],
                        "msg": "Could not detect face in the image",
                        "type": "value_error",
                    }
                ]
            },
        ),
        (
            "forbidden [error:2026]",
            {"name": "ContentPolicyViolation", "message": "The prompt was rejected by the content policy"},
        ),
    ],
)
def test_error_outcomes(emu: KlingEmulator, prompt: str, error: dict[str, Any]) -> None:
    gen_id = create(emu, prompt=prompt).json()["id"]
    assert poll(emu, gen_id).json()["status"] in ("queued", "generating")
    force_complete(emu, gen_id)
    body = poll(emu, gen_id).json()
    assert body["status"] == "error"
    assert body["video"] is None
    assert body["error"] == error


def test_alternate_styles() -> None:
    with KlingEmulator(
        generation_seconds=30,
        status_style="alternate",
        id_style="short",
        id_key="generation_id",
        usage_style="credits",
    ) as emu:
        body = create(emu).json()
        assert "id" not in body
        gen_id = body["generation_id"]
        assert re.fullmatch(r"gen_[0-9a-f]{8}", gen_id)
        assert body["status"] == "waiting"
        assert body["meta"]["usage"] == {"credits_used": 420000, "usd_spent": 0.42}
        emu.complete(gen_id)
        assert poll(emu, gen_id).json()["status"] == "succeeded"
        failed_id = create(emu, prompt="[error]").json()["generation_id"]
        emu.complete(failed_id)
        assert poll(emu, failed_id).json()["status"] == "failed"


def test_429_with_retry_after_creates_nothing(emu: KlingEmulator) -> None:
    emu.inject("429", retry_after=2, method="POST")
    limited = create(emu)
    assert_service_error(limited, 429)
    assert limited.headers["Retry-After"] == "2"
    assert emu.generations == {}
    assert create(emu).status_code == 201
    assert len(emu.generations) == 1
    assert emu.fault_counts == {"429": 1}
    assert [r.fault for r in emu.requests] == ["429", None]


def test_reset_is_a_connection_error(emu: KlingEmulator) -> None:
    emu.inject("reset")
    with pytest.raises(requests.ConnectionError):
        create(emu)
    assert emu.generations == {}
    emu.inject("reset", after_create=True)
    with pytest.raises(requests.ConnectionError):
        create(emu)
    assert len(emu.generations) == 1


async def test_reset_seen_by_aiohttp(emu: KlingEmulator) -> None:
    # aiohttp silently retries an idempotent request once after a disconnect: reset both tries.
    emu.inject("reset", method="GET", times=2)
    async with aiohttp.ClientSession(headers=AUTH) as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(emu.base_url + API_PATH, params={"generation_id": "x"}) as resp:
                await resp.read()
    assert emu.fault_counts == {"reset": 2}
    assert [r.status for r in emu.requests] == [None, None]


def test_slow_and_non_json(emu: KlingEmulator) -> None:
    emu.inject("slow", delay=0.3)
    started = time.monotonic()
    assert create(emu).status_code == 201
    assert time.monotonic() - started >= 0.3
    emu.inject("non_json")
    page = poll(emu, "anything")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.text == "<html>Bad gateway</html>"


def test_download_faults(emu: KlingEmulator) -> None:
    gen_id = create(emu).json()["id"]
    emu.complete(gen_id)
    video = poll(emu, gen_id).json()["video"]
    emu.inject("reset_mid", path_prefix="/_emulator/videos")
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        requests.get(video["url"], timeout=5)
    emu.inject("wrong_length", path_prefix="/_emulator/videos")
    short = requests.get(video["url"], timeout=5)
    assert short.status_code == 200
    assert len(short.content) == int(short.headers["Content-Length"]) == video["file_size"] - 1000
    assert len(requests.get(video["url"], timeout=5).content) == video["file_size"]


def test_video_bytes_and_blob() -> None:
    with KlingEmulator(generation_seconds=0.05, video_bytes=3_000_000) as emu:
        gen_id = create(emu).json()["id"]
        emu.complete(gen_id)
        video = poll(emu, gen_id).json()["video"]
        assert video["file_size"] == 3_000_000
        data = requests.get(video["url"], timeout=5).content
        assert data == blob_bytes(0, 3_000_000)
        assert 0 not in data[:1000]
        tail = requests.get(video["url"], headers={"Range": "bytes=2999000-"}, timeout=5)
        assert tail.status_code == 206
        assert tail.content == blob_bytes(2_999_000, 1000)
        blob = requests.get(emu.base_url + "/_emulator/blob/12345", timeout=5)
        assert blob.headers["Content-Length"] == "12345"
        assert blob.content == blob_bytes(0, 12345)


def test_recording_never_contains_the_key() -> None:
    secret = "sk-very-secret-" + uuid.uuid4().hex
    with KlingEmulator(api_key=secret, generation_seconds=0.05) as emu:
        headers = {"Authorization": f"Bearer {secret}"}
        gen_id = requests.post(emu.base_url + API_PATH, json=BODY, headers=headers, timeout=5).json()["id"]
        emu.inject("503")
        requests.get(emu.base_url + API_PATH, params={"generation_id": gen_id}, headers=headers, timeout=5)
        recorded = requests.get(emu.base_url + "/_emulator/requests", timeout=5).text
        assert secret not in recorded
        assert secret not in repr(emu.requests)
        assert secret not in repr(emu)
        first = emu.requests[0]
        assert (first.method, first.path, first.json, first.auth_ok, first.status) == (
            "POST",
            API_PATH,
            BODY,
            True,
            201,
        )
        assert first["query"] == {}
        assert json.loads(recorded)[1]["fault"] == "503"


def test_control_api(emu: KlingEmulator) -> None:
    base = emu.base_url
    r = requests.post(
        base + "/_emulator/faults", json={"kind": "503", "times": 2, "method": "GET"}, timeout=5
    )
    assert r.json() == {"ok": True}
    gen_id = create(emu).json()["id"]
    statuses = [poll(emu, gen_id).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert requests.get(base + "/_emulator/counts", timeout=5).json() == {"POST": 1, "GET": 3}
    assert emu.count() == 4
    assert emu.count("GET") == 3
    bad = requests.post(base + "/_emulator/faults", json={"kind": "418"}, timeout=5)
    assert bad.status_code == 400
    assert requests.post(base + "/_emulator/reset", timeout=5).json() == {"ok": True}
    assert requests.get(base + "/_emulator/counts", timeout=5).json() == {"POST": 0, "GET": 0}
    assert emu.generations == {}
    assert emu.fault_counts == {}


def test_random_faults_are_reproducible(emu: KlingEmulator) -> None:
    def run() -> list[int]:
        emu.reset()
        emu.set_fault_rate(0.5, kinds=["502", "503"], seed=7)
        return [poll(emu, "x").status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert set(first) == {404, 502, 503}
    assert sum(emu.fault_counts.values()) == sum(code != 404 for code in first)
    # POSTs are not eligible with the default methods.
    assert all(create(emu).status_code == 201 for _ in range(5))


async def test_thousand_concurrent_keep_alive_connections() -> None:
    with KlingEmulator(generation_seconds=60) as emu:
        gen_id = create(emu).json()["id"]
        # Every answer waits a little so all 1,000 requests are in flight on their own connection.
        emu.inject("slow", delay=0.5, times=None, method="GET")
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:

            async def one() -> int:
                async with session.get(emu.base_url + API_PATH, params={"generation_id": gen_id}) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(one() for _ in range(1000)))
            assert statuses == [200] * 1000
            # Keep-alive: the connections stay open after the answers.
            assert emu.connection_count >= 1000
        assert emu.count("GET", API_PATH) == 1000


def test_cli_serves_until_sigterm() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_kling.emulator", "--port", "0", "--api-key", "cli-key"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            match = re.fullmatch(r"Kling emulator listening on (http://127\.0\.0\.1:\d+)", line)
            assert match, line
            base = match.group(1)
            headers = {"Authorization": "Bearer cli-key"}
            assert requests.post(base + API_PATH, json=BODY, headers=headers, timeout=5).status_code == 201
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
