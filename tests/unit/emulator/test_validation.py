"""Tests of the emulator's catalog-driven validation, both endpoints, 2026 answers and hostile controls."""

from __future__ import annotations

import base64
import gzip
import json
import re
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

from airflow_provider_kling import catalog
from airflow_provider_kling.emulator import (
    API_PATH,
    FAULT_HELP,
    FAULT_KINDS,
    UNIFIED_PATH,
    KlingEmulator,
    blob_bytes,
    validate_body,
)
from airflow_provider_kling.emulator.__main__ import build_parser

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "emulator-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PATHS = {"legacy": API_PATH, "unified": UNIFIED_PATH}
URL = "https://example.com/a.png"
V1 = "kling-video/v1/standard/image-to-video"
V3_T2V = "klingai/video-v3-pro-text-to-video"
V3_I2V = "klingai/video-v3-pro-image-to-video"
OMNI = "klingai/video-v3-omni-720p-text-to-video"
RETIRED = "kling-video/v1.5/standard/text-to-video"
EVERY_MODEL = [*catalog.current_models(), *catalog.MODEL_ALIASES]
MARKERS = ("[error]", "[error:2026]", "[seconds:N]")


@pytest.fixture
def emu() -> Iterator[KlingEmulator]:
    with KlingEmulator(generation_seconds=60) as emulator:
        yield emulator


# ----------------------------------------------------------------------------- helpers
def sample_value(model: str, name: str, seed: bool) -> Any:
    """A valid value of field ``name`` for ``model`` (``seed``: the legacy endpoint's seed names)."""
    spec = catalog.field_spec(model, name)
    kind = spec["type"]
    if kind == "duration":
        if seed:
            return "5"
        return spec["range"][0] if "range" in spec else spec["choices"][0]
    if kind == "images":
        return [URL] * spec.get("min_items", 1)
    if kind == "multi_prompt":
        return [{"prompt": "one shot", "duration": 5}] if spec.get("item") == "shot" else ["one shot"]
    return {
        "text": "a cat turns its head",
        "image": URL,
        "image_or_pair": URL,
        "audio": "https://example.com/a.mp3",
        "video": "https://example.com/v.mp4",
        "number": 0.5,
        "bool": True,
    }.get(kind, spec.get("choices", ("x",))[0])


def minimal_body(model: str, endpoint: str = "legacy", **extra: Any) -> dict[str, Any]:
    """``model``, its required fields, a prompt when it needs prompt or multi_prompt, and a duration."""
    entry = catalog.model_entry(model)
    assert entry is not None
    seed = endpoint == "legacy" and bool(entry.get("seed_names"))
    names = list(entry.get("required", ()))
    if "prompt_or_multi_prompt" in entry.get("rules", ()):
        names.append("prompt")
    if "duration" in catalog.model_fields(model):
        names.append("duration")
    body = {"model": model, **{name: sample_value(model, name, seed) for name in names}}
    return {**body, **extra}


def create(emu: KlingEmulator, body: Any, endpoint: str = "legacy") -> requests.Response:
    return requests.post(emu.base_url + PATHS[endpoint], json=body, headers=AUTH, timeout=5)


def poll(emu: KlingEmulator, gen_id: str, endpoint: str = "legacy") -> requests.Response:
    url = emu.base_url + PATHS[endpoint]
    return requests.get(url, params={"generation_id": gen_id}, headers=AUTH, timeout=5)


def control(emu: KlingEmulator, route: str, payload: Any) -> requests.Response:
    return requests.post(f"{emu.base_url}/_emulator/{route}", json=payload, timeout=5)


def complete(emu: KlingEmulator, gen_id: str) -> None:
    r = requests.post(f"{emu.base_url}/_emulator/generations/{quote(gen_id, safe='')}/complete", timeout=5)
    assert r.status_code == 200, r.text


def service_error(resp: requests.Response, status: int, path: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert (body["statusCode"], body["path"]) == (status, path)
    uuid.UUID(body["requestId"])
    datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    return str(body["message"])


# ----------------------------------------------------------------------------- the catalog
@pytest.mark.parametrize("endpoint", ["legacy", "unified"])
@pytest.mark.parametrize("model", EVERY_MODEL)
def test_every_catalog_model_is_accepted(emu: KlingEmulator, model: str, endpoint: str) -> None:
    body = minimal_body(model, endpoint)
    assert validate_body(body, endpoint) is None
    created = create(emu, body, endpoint)
    assert created.status_code == 201, created.text
    gen_id = created.json()["id"]
    assert poll(emu, gen_id, endpoint).json()["status"] == "queued"
    complete(emu, gen_id)
    done = poll(emu, gen_id, endpoint).json()
    assert done["status"] == "completed"
    canonical = catalog.MODEL_ALIASES.get(model, model)
    video = done["video"]
    if "omni" in canonical:
        assert isinstance(video, list)
        video = video[0]
    assert video["url"].endswith("/output.mp4")
    assert emu.generations[gen_id].endpoint == endpoint
    assert {r.endpoint for r in emu.requests} == {endpoint}


@pytest.mark.parametrize("endpoint", ["legacy", "unified"])
@pytest.mark.parametrize(
    "model", [V1, V3_T2V, "klingai/avatar-pro", "klingai/video-o1-video-to-video-edit", OMNI]
)
def test_unknown_field_for_a_known_model_is_refused(emu: KlingEmulator, model: str, endpoint: str) -> None:
    body = minimal_body(model, endpoint, webhook_url="https://example.com/hook")
    message = service_error(create(emu, body, endpoint), 400, PATHS[endpoint])
    assert message.startswith("Body validation error")
    assert "'webhook_url'" in message
    assert emu.generations == {}


def test_a_field_of_another_model_is_refused(emu: KlingEmulator) -> None:
    # v1.6 standard takes no tail image; text-to-video takes no image.
    body = minimal_body("kling-video/v1.6/standard/image-to-video", tail_image_url=URL)
    assert "'tail_image_url'" in service_error(create(emu, body), 400, API_PATH)
    body = minimal_body(V3_T2V, "unified", image_url=URL)
    assert "'image_url'" in service_error(create(emu, body, "unified"), 400, UNIFIED_PATH)


@pytest.mark.parametrize("endpoint", ["legacy", "unified"])
def test_retired_model_is_refused(emu: KlingEmulator, endpoint: str) -> None:
    body = {"model": RETIRED, "prompt": "a cat"}
    message = service_error(create(emu, body, endpoint), 400, PATHS[endpoint])
    assert message == f"Model {RETIRED} is no longer supported"


@pytest.mark.parametrize("endpoint", ["legacy", "unified"])
def test_unknown_model_passes_with_any_field(emu: KlingEmulator, endpoint: str) -> None:
    body = {"model": "klingai/video-v9-hyper", "warp_factor": 9, "prompt": None, "duration": "forever"}
    created = create(emu, body, endpoint)
    assert created.status_code == 201, created.text
    gen_id = created.json()["id"]
    assert emu.requests[0].json == body
    assert emu.generations[gen_id].body == body
    assert emu.generations[gen_id].duration == 5
    assert poll(emu, gen_id, endpoint).status_code == 200


@pytest.mark.parametrize(
    ("model", "endpoint", "extra", "expected"),
    [
        ("klingai/avatar-pro", "unified", {"audio_url": None}, "audio_url: Required"),
        (V3_I2V, "unified", {"image_url": None}, "image_url: Required"),
        (V3_T2V, "unified", {"prompt": None}, "prompt: Required"),
        (V1, "legacy", {"prompt": None}, "prompt: Required"),
        (V1, "legacy", {"prompt": 7}, "prompt: Expected string, received number"),
        (V1, "unified", {"image_url": ["a"]}, "image_url: Expected string, received array"),
        (V1, "legacy", {"cfg_scale": "high"}, "cfg_scale: Expected number, received string"),
    ],
)
def test_required_and_types(
    emu: KlingEmulator, model: str, endpoint: str, extra: dict[str, Any], expected: str
) -> None:
    body = {k: v for k, v in minimal_body(model, endpoint, **extra).items() if v is not None}
    assert service_error(create(emu, body, endpoint), 400, PATHS[endpoint]) == expected


@pytest.mark.parametrize(
    ("model", "endpoint", "extra", "expected"),
    [
        # Legacy endpoint, seed models: the seed's names and a string duration.
        (V1, "legacy", {"static_mask_url": URL, "duration": "10"}, None),
        (V1, "legacy", {"duration": 10}, None),
        (V1, "legacy", {"dynamic_masks": [{"mask_url": URL, "trajectories": []}]}, None),
        (V1, "legacy", {"static_mask": URL}, "'static_mask'"),
        (V1, "legacy", {"dynamic_masks": [{"mask": URL}]}, "dynamic_masks.0"),
        (V1, "legacy", {"duration": "7"}, "Invalid enum value. Expected '5' | '10', received '7'"),
        # Unified endpoint: the current names and an integer duration.
        (V1, "unified", {"static_mask": URL, "duration": 10}, None),
        (V1, "unified", {"dynamic_masks": [{"mask": URL, "trajectories": []}]}, None),
        (V1, "unified", {"static_mask_url": URL}, "'static_mask_url'"),
        (V1, "unified", {"dynamic_masks": [{"mask_url": URL}]}, "'mask_url'"),
        (V1, "unified", {"dynamic_masks": [{"trajectories": []}]}, "dynamic_masks.0.mask: Required"),
        (V1, "unified", {"duration": "5"}, "duration: Expected number, received string"),
        (V1, "unified", {"duration": 7}, "Invalid enum value. Expected 5 | 10, received '7'"),
        # Models without seed names use the current names on the legacy endpoint too.
        (V3_T2V, "legacy", {"duration": 15}, None),
        (V3_T2V, "legacy", {"duration": "5"}, "duration: Expected number, received string"),
        (V3_T2V, "unified", {"duration": 3}, None),
        (V3_T2V, "unified", {"duration": 16}, "duration: Number must be less than or equal to 15"),
        (V3_T2V, "unified", {"duration": 2}, "duration: Number must be greater than or equal to 3"),
    ],
)
def test_field_names_and_duration_per_endpoint(
    emu: KlingEmulator, model: str, endpoint: str, extra: dict[str, Any], expected: str | None
) -> None:
    resp = create(emu, minimal_body(model, endpoint, **extra), endpoint)
    if expected is None:
        assert resp.status_code == 201, resp.text
        return
    message = service_error(resp, 400, PATHS[endpoint])
    assert expected in message
    if expected.startswith("'"):
        assert message.startswith("Body validation error")


# ----------------------------------------------------------------------------- kinds and markers
@pytest.mark.parametrize(
    ("shots", "outcome"),
    [
        (["sad [error]", "fine"], "error"),
        ([{"prompt": "banned [error:2026]", "duration": 5}], "error_2026"),
        (["fine", "[error] only in the second shot"], "completed"),
    ],
)
def test_markers_in_multi_prompt(emu: KlingEmulator, shots: list[Any], outcome: str) -> None:
    model = "klingai/video-v3-turbo-pro-text-to-video" if isinstance(shots[0], dict) else V3_T2V
    body = {"model": model, "multi_prompt": shots, "duration": 10}
    gen_id = create(emu, body, "unified").json()["id"]
    gen = emu.generations[gen_id]
    assert gen.outcome == outcome
    assert gen.duration == 10
    complete(emu, gen_id)
    answer = poll(emu, gen_id, "unified").json()
    assert answer["status"] == ("completed" if outcome == "completed" else "error")


def test_seconds_marker_in_multi_prompt_and_usage_follows_duration(emu: KlingEmulator) -> None:
    body = {"model": V3_T2V, "multi_prompt": ["[seconds:1000] slow"], "duration": 15}
    created = create(emu, body, "unified").json()
    gen = emu.generations[created["id"]]
    assert gen.ready_at - gen.created_at == pytest.approx(1000)
    assert created["meta"]["usage"] == {"tokens_used": 1_260_000}


def test_text_to_video_needs_no_image(emu: KlingEmulator) -> None:
    created = create(emu, {"model": "kling-video/v1.6/standard/text-to-video", "prompt": "[error] x"})
    assert created.status_code == 201, created.text
    assert emu.generations[created.json()["id"]].outcome == "error"


def test_generation_pollable_on_both_endpoints(emu: KlingEmulator) -> None:
    gen_id = create(emu, minimal_body(V1, "unified"), "unified").json()["id"]
    complete(emu, gen_id)
    on_unified = poll(emu, gen_id, "unified").json()
    on_legacy = poll(emu, gen_id, "legacy").json()
    assert on_unified == on_legacy
    assert [(r.method, r.path, r.endpoint) for r in emu.requests] == [
        ("POST", UNIFIED_PATH, "unified"),
        ("GET", UNIFIED_PATH, "unified"),
        ("GET", API_PATH, "legacy"),
    ]
    assert requests.get(emu.base_url + "/_emulator/counts", timeout=5).json() == {"POST": 1, "GET": 2}
    recorded = requests.get(emu.base_url + "/_emulator/requests", timeout=5).json()
    assert [r["endpoint"] for r in recorded] == ["unified", "unified", "legacy"]


def test_faults_hit_both_endpoints(emu: KlingEmulator) -> None:
    emu.inject("503", times=2)
    assert create(emu, minimal_body(V1, "unified"), "unified").status_code == 503
    assert create(emu, minimal_body(V1)).status_code == 503
    assert emu.generations == {}


# ----------------------------------------------------------------------------- 2026 answers
def test_2026_answer_shapes() -> None:
    with KlingEmulator(generation_seconds=60, answer_style="2026") as emu:
        created = create(emu, minimal_body(V1, duration="10"))
        assert created.status_code == 201
        body = created.json()
        assert re.fullmatch(r"[A-Za-z0-9]{21}", body["id"])
        usage = {"credits_used": 1_680_000, "usd_spent": 0.84}
        assert body == {"id": body["id"], "status": "queued", "meta": {"usage": usage}}
        complete(emu, body["id"])
        done = poll(emu, body["id"]).json()
        assert done["status"] == "completed"
        assert done["meta"] == {"usage": usage}
        assert done["error"] is None
        assert set(done["video"]) == {"url"}
        url = done["video"]["url"]
        assert re.search(r"/output\.mp4\?cacheKey=[^&]+&ksTime=[^&]+$", url)
        assert url == poll(emu, body["id"]).json()["video"]["url"]  # stable between polls
        data = requests.get(url, timeout=5).content
        assert data == emu.video_data(body["id"])
        assert data[4:8] == b"ftyp"


@pytest.mark.parametrize("answer_style", ["2025", "2026"])
def test_omni_video_is_a_list(answer_style: str) -> None:
    with KlingEmulator(generation_seconds=60, answer_style=answer_style) as emu:
        gen_id = create(emu, minimal_body(OMNI, "unified"), "unified").json()["id"]
        complete(emu, gen_id)
        video = poll(emu, gen_id, "unified").json()["video"]
        assert isinstance(video, list)
        assert len(video) == 1
        assert video[0]["url"].split("?")[0].endswith("/output.mp4")
        if answer_style == "2026":
            assert set(video[0]) == {"url"}
        else:
            assert video[0]["file_size"] == len(emu.video_data(gen_id))


def test_numeric_ids() -> None:
    with KlingEmulator(generation_seconds=60, id_style="numeric", answer_style="2026") as emu:
        gen_id = create(emu, minimal_body(V1)).json()["id"]
        assert re.fullmatch(r"[1-9][0-9]{17}", gen_id)
        assert poll(emu, gen_id).status_code == 200


def test_answer_style_is_checked() -> None:
    with pytest.raises(ValueError, match="answer_style"):
        KlingEmulator(answer_style="2027")


# ----------------------------------------------------------------------------- scripted answers
def test_script_replaces_the_poll_answer(emu: KlingEmulator) -> None:
    gen_id = create(emu, minimal_body(V1)).json()["id"]
    hostile = {"id": "x", "status": 2, "video": {"url": {"a": 1}, "file_name": 7}}
    emu.script(method="GET", body=hostile, times=2)
    assert poll(emu, gen_id).json() == hostile
    assert poll(emu, "anything").json() == hostile  # no lookup, no auth: exactly the script
    assert poll(emu, gen_id).json()["status"] == "queued"  # used up
    assert [r.scripted for r in emu.requests] == [False, True, True, False]
    assert emu.requests[1].status == 200
    assert emu.fault_counts == {}


def test_script_a_video_url_pointing_anywhere(emu: KlingEmulator) -> None:
    gen_id = create(emu, minimal_body(V1)).json()["id"]
    elsewhere = emu.base_url + "/_emulator/redirect?to=" + quote("file:///etc/passwd", safe="")
    emu.script(method="GET", body={"id": gen_id, "status": "completed", "video": {"url": elsewhere}})
    assert poll(emu, gen_id).json()["video"]["url"] == elsewhere
    emu.script(method="GET", body={"id": gen_id, "status": "completed", "video": [{"url": elsewhere}]})
    assert poll(emu, gen_id).json()["video"] == [{"url": elsewhere}]
    emu.script(method="GET", body={"id": gen_id, "status": "completed", "video": {}})
    assert poll(emu, gen_id).json()["video"] == {}


def test_script_post_creates_nothing(emu: KlingEmulator) -> None:
    emu.script(method="POST", status=201, body={"id": "task~7f3a@eu", "status": "queued"})
    created = create(emu, minimal_body(V1))
    assert created.status_code == 201
    assert created.json() == {"id": "task~7f3a@eu", "status": "queued"}
    assert emu.generations == {}
    assert emu.requests[0].json == minimal_body(V1)
    # queue_ids makes a real generation with such an id.
    emu.queue_ids("task~7f3a@eu")
    assert create(emu, minimal_body(V1)).json()["id"] == "task~7f3a@eu"
    assert poll(emu, "task~7f3a@eu").json()["id"] == "task~7f3a@eu"


def test_script_raw_bytes_headers_and_prefix(emu: KlingEmulator) -> None:
    emu.script(
        path_prefix="/_emulator/videos",
        status=200,
        body_bytes=b"\x00not a video",
        headers={"Content-Type": "text/plain", "X-Odd": "1"},
    )
    # Matches any path under the prefix, even an unknown token.
    r = requests.get(emu.base_url + "/_emulator/videos/nope/output.mp4", timeout=5)
    assert (r.status_code, r.content, r.headers["Content-Type"], r.headers["X-Odd"]) == (
        200,
        b"\x00not a video",
        "text/plain",
        "1",
    )
    emu.script(method="POST", status=500, body=b"<html>oops</html>")
    assert create(emu, minimal_body(V1)).text == "<html>oops</html>"
    emu.script(method="GET")
    empty = poll(emu, "x")
    assert (empty.status_code, empty.content) == (200, b"")
    emu.script(method="GET", body=None)
    assert poll(emu, "x").content == b"null"


def test_script_through_the_control_api(emu: KlingEmulator) -> None:
    ok = control(emu, "script", {"method": "GET", "times": 2, "status": 202, "body": {"video": [1]}})
    assert ok.json() == {"ok": True}
    raw = base64.b64encode(b"\xff\xfe").decode()
    assert control(emu, "script", {"method": "POST", "body_base64": raw}).json() == {"ok": True}
    assert control(emu, "script", {"method": "GET", "body_text": "plain"}).json() == {"ok": True}
    pending = requests.get(emu.base_url + "/_emulator/script", timeout=5).json()["pending"]
    assert [(p["method"], p["times"]) for p in pending] == [("GET", 2), ("POST", 1), ("GET", 1)]
    first = poll(emu, "x")
    assert (first.status_code, first.json()) == (202, {"video": [1]})
    assert poll(emu, "x").json() == {"video": [1]}
    assert create(emu, {}).content == b"\xff\xfe"
    assert poll(emu, "x").text == "plain"
    assert poll(emu, "x").status_code == 404
    assert control(emu, "script", {"colour": "red"}).status_code == 400
    assert control(emu, "script", {"status": 42}).status_code == 400
    assert control(emu, "script", {"times": 0}).status_code == 400
    control(emu, "script", {"times": None})
    assert requests.post(emu.base_url + "/_emulator/reset", timeout=5).json() == {"ok": True}
    assert requests.get(emu.base_url + "/_emulator/script", timeout=5).json() == {"pending": []}


# ----------------------------------------------------------------------------- new faults
def finished_video(emu: KlingEmulator) -> dict[str, Any]:
    gen_id = create(emu, minimal_body(V1)).json()["id"]
    complete(emu, gen_id)
    video: dict[str, Any] = poll(emu, gen_id).json()["video"]
    return video


def test_gzip_fault_on_a_download(emu: KlingEmulator) -> None:
    video = finished_video(emu)
    sample = requests.get(video["url"], timeout=5).content
    emu.inject("gzip", path_prefix="/_emulator/videos", times=3)
    with requests.get(video["url"], headers={"Accept-Encoding": "gzip"}, stream=True, timeout=5) as r:
        raw = r.raw.read(decode_content=False)
        assert r.headers["Content-Encoding"] == "gzip"
        assert int(r.headers["Content-Length"]) == len(raw) != video["file_size"]
    assert gzip.decompress(raw) == sample
    # A Range request gets the whole compressed body.
    ranged = requests.get(video["url"], headers={"Accept-Encoding": "gzip", "Range": "bytes=0-9"}, timeout=5)
    assert ranged.status_code == 200
    assert ranged.content == sample  # requests decodes it
    # A client that does not accept gzip gets the plain body.
    plain = requests.get(video["url"], headers={"Accept-Encoding": "identity"}, timeout=5)
    assert "Content-Encoding" not in plain.headers
    assert plain.content == sample
    assert emu.fault_counts == {"gzip": 3}


def test_gzip_fault_on_the_api(emu: KlingEmulator) -> None:
    gen_id = create(emu, minimal_body(V1)).json()["id"]
    emu.inject("gzip", method="GET")
    with requests.get(
        emu.base_url + API_PATH,
        params={"generation_id": gen_id},
        headers={**AUTH, "Accept-Encoding": "gzip;q=1"},
        stream=True,
        timeout=5,
    ) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(r.raw.read(decode_content=False)))["id"] == gen_id


async def test_dribble_fault_sends_small_pieces_slowly(emu: KlingEmulator) -> None:
    gen_id = create(emu, minimal_body(V1)).json()["id"]
    emu.inject("dribble", method="GET", delay=0.5)
    started = time.monotonic()
    pieces: list[bytes] = []
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(emu.base_url + API_PATH, params={"generation_id": gen_id}) as resp,
    ):
        assert resp.status == 200
        async for piece in resp.content.iter_any():
            pieces.append(piece)
    assert time.monotonic() - started >= 0.4
    assert len(pieces) >= 3
    assert json.loads(b"".join(pieces))["id"] == gen_id
    assert emu.fault_counts == {"dribble": 1}


def test_dribble_on_a_download_keeps_the_bytes(emu: KlingEmulator) -> None:
    video = finished_video(emu)
    emu.inject("dribble", path_prefix="/_emulator/videos", delay=0.2)
    r = requests.get(video["url"], timeout=10)
    assert len(r.content) == int(r.headers["Content-Length"]) == video["file_size"]


def test_huge_fault_is_valid_json_of_the_size_asked(emu: KlingEmulator) -> None:
    assert control(emu, "faults", {"kind": "huge", "size": 3_000_000, "method": "GET"}).json() == {"ok": True}
    r = requests.get(emu.base_url + API_PATH, params={"generation_id": "x"}, headers=AUTH, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert len(r.content) == int(r.headers["Content-Length"]) == 3_000_000
    assert r.json()["id"] == "huge"
    emu.inject("huge", size=10)
    assert len(create(emu, minimal_body(V1)).content) == 10
    assert emu.generations == {}


def test_huge_fault_default_size_streams(emu: KlingEmulator) -> None:
    emu.inject("huge")
    url = emu.base_url + API_PATH
    with requests.get(url, params={"generation_id": "x"}, headers=AUTH, stream=True, timeout=10) as r:
        assert int(r.headers["Content-Length"]) == 80 * 1024 * 1024
        assert r.raw.read(1024).startswith(b'{"id": "huge"')
    # The client hung up early: the emulator carries on serving.
    assert poll(emu, "x").status_code == 404


@pytest.mark.parametrize("kind", ["429", "503"])
def test_retry_after_as_a_string_is_sent_verbatim(emu: KlingEmulator, kind: str) -> None:
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    assert control(emu, "faults", {"kind": kind, "retry_after": date}).json() == {"ok": True}
    r = poll(emu, "x")
    assert r.status_code == int(kind)
    assert r.headers["Retry-After"] == date
    assert emu.requests[0].retry_after == date
    emu.set_fault_rate(1.0, kinds=[{"kind": kind, "retry_after": "soon"}])
    assert poll(emu, "x").headers["Retry-After"] == "soon"
    emu.set_fault_rate(0)
    emu.inject(kind, retry_after=1.5)
    assert poll(emu, "x").headers["Retry-After"] == "1.5"


def test_new_faults_are_known_and_documented() -> None:
    assert {"gzip", "dribble", "huge"} <= FAULT_KINDS
    assert set(FAULT_HELP) == FAULT_KINDS


# ----------------------------------------------------------------------------- redirects
def test_redirects_chain(emu: KlingEmulator) -> None:
    blob = emu.base_url + "/_emulator/blob/100"
    inner = emu.base_url + "/_emulator/redirect?to=" + quote(blob, safe="")
    outer = emu.base_url + "/_emulator/redirect?to=" + quote(inner, safe="")
    r = requests.get(outer, timeout=5)
    assert r.content == blob_bytes(0, 100)
    assert [h.status_code for h in r.history] == [302, 302]
    hops = requests.get(f"{emu.base_url}/_emulator/redirect?to={quote(blob, safe='')}&hops=4", timeout=5)
    assert hops.content == blob_bytes(0, 100)
    assert len(hops.history) == 4
    first = requests.get(
        f"{emu.base_url}/_emulator/redirect?to={quote(blob, safe='')}&hops=2&status=307",
        allow_redirects=False,
        timeout=5,
    )
    assert first.status_code == 307
    assert "/_emulator/redirect?" in first.headers["Location"]
    assert "hops=1" in first.headers["Location"]
    loop = f"{emu.base_url}/_emulator/redirect?to={quote(blob, safe='')}&hops=1000"
    with pytest.raises(requests.TooManyRedirects):
        requests.get(loop, timeout=5)
    bad = requests.get(f"{emu.base_url}/_emulator/redirect?to=x&status=200", timeout=5)
    assert bad.status_code == 400


# ----------------------------------------------------------------------------- help and docs
def control_routes() -> set[str]:
    app = KlingEmulator().make_app()
    routes = set()
    for resource in app.router.resources():
        path = resource.canonical
        if path.startswith("/_emulator"):
            routes.add(re.sub(r"\{[^}]*\}", "", path).split("/")[2])
    return routes


def test_help_explains_faults_markers_and_controls() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "airflow_provider_kling.emulator", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for kind in FAULT_KINDS:
        assert re.search(rf"^  {re.escape(kind)} ", out, re.MULTILINE), kind
    for marker in (*MARKERS, "multi_prompt"):
        assert marker.replace("N]", "") in out
    for route in control_routes():
        assert f"/_emulator/{route}" in out, route
    for flag in ("--answer-style", "--id-style", "numeric", "2026", API_PATH, UNIFIED_PATH):
        assert flag in out


def test_package_docs_keep_in_step() -> None:
    import airflow_provider_kling.emulator as package

    doc = package.__doc__ or ""
    for kind in FAULT_KINDS:
        assert f"``{kind}``" in doc, kind
    for route in control_routes():
        assert f"/_emulator/{route}" in doc, route
    for word in ("[error]", "[error:2026]", "[seconds:N]", "answer-style", "numeric", "emu.script("):
        assert word in doc


def test_cli_parses_the_new_options() -> None:
    args = build_parser().parse_args(["--answer-style", "2026", "--id-style", "numeric"])
    assert (args.answer_style, args.id_style) == ("2026", "numeric")
    assert build_parser().parse_args([]).id_style is None
