"""The emulator's account side over real sockets: priced catalogue, billing, tracing, usage, logs, limit.

Prices are the emulator's own (``emulator.pricing``); the literal figures below are written out by
hand so a wrong table entry or a wrong rule fails here rather than agreeing with itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest
import requests

from airflow_provider_kling import catalog
from airflow_provider_kling.emulator import API_PATH, UNIFIED_PATH, KlingEmulator, pricing
from airflow_provider_kling.emulator.account import period_start
from tests.support.catalog_bodies import expected_body

KEY = "emulator-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PATHS = {"legacy": API_PATH, "unified": UNIFIED_PATH}
V1 = "kling-video/v1/standard/image-to-video"
V1_BODY = {"model": V1, "image_url": "https://example.com/cat.png", "prompt": "a cat turns its head"}
CURRENT = catalog.current_models()


@pytest.fixture
def emu() -> Iterator[KlingEmulator]:
    with KlingEmulator(generation_seconds=60, answer_style="2026") as emulator:
        yield emulator


def submit(
    emu: KlingEmulator, body: dict[str, Any], endpoint: str = "legacy", **headers: str
) -> requests.Response:
    return requests.post(emu.base_url + PATHS[endpoint], json=body, headers={**AUTH, **headers}, timeout=5)


def poll(emu: KlingEmulator, gen_id: str, endpoint: str = "legacy", **headers: str) -> requests.Response:
    url = emu.base_url + PATHS[endpoint]
    return requests.get(url, params={"generation_id": gen_id}, headers={**AUTH, **headers}, timeout=5)


def complete(emu: KlingEmulator, gen_id: str) -> None:
    r = requests.post(f"{emu.base_url}/_emulator/generations/{quote(gen_id, safe='')}/complete", timeout=5)
    assert r.status_code == 200, r.text


def get(emu: KlingEmulator, path: str, params: Any = None, **headers: str) -> requests.Response:
    return requests.get(emu.base_url + path, params=params, headers=headers, timeout=5)


def usage(emu: KlingEmulator, **params: str) -> requests.Response:
    return get(emu, "/v2/usage", params or {"period": "24h"}, **AUTH)


def logs(emu: KlingEmulator, params: Any = None) -> requests.Response:
    return get(emu, "/v2/logs", params or {"period": "24h"}, **AUTH)


def billed(resp: requests.Response) -> tuple[int, float]:
    """The cost headers of an answer, checked to agree with each other."""
    credits = int(resp.headers["x-aimlapi-credits-used"])
    usd = float(resp.headers["x-aimlapi-usd-spent"])
    assert usd == pytest.approx(credits / 2_000_000)
    return credits, usd


def service_error(resp: requests.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert body["statusCode"] == status
    return str(body["message"])


# ----------------------------------------------------------------------------- the priced catalogue
def test_catalogue_prices_every_current_model_with_no_key(emu: KlingEmulator) -> None:
    resp = get(emu, "/v1/models", {"include": "pricing"})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["object"] == "list"
    models = answer["data"]
    assert [m["id"] for m in models] == CURRENT
    for model in models:
        assert set(model) == {"id", "aliases", "type", "info", "tags", "pricing"}
        assert "emulator" in model["info"]["note"].lower()
        assert "not the service" in model["info"]["note"]
        assert model["pricing"]["currency"] == "USD"
    kinds = {m["pricing"]["kind"] for m in models}
    assert kinds == {"fixed", "variants", "variable"}
    by_id = {m["id"]: m for m in models}
    assert by_id["klingai/video-v3-turbo-pro-text-to-video"]["aliases"] == [
        "kling-video/v3/turbo/pro/text-to-video"
    ]
    assert by_id["klingai/video-v2-6-motion-control"]["aliases"] == ["klingai/video-v2-6-pro-motion-control"]
    assert by_id["klingai/video-v3-pro-text-to-video"]["pricing"] == {
        "kind": "variants",
        "currency": "USD",
        "dimensions": ["generate_audio"],
        "variants": [
            {"when": {"generate_audio": True}, "price": 0.224, "unit": "second", "per": 1},
            {"when": {"generate_audio": False}, "price": 0.112, "unit": "second", "per": 1},
        ],
    }
    assert by_id["klingai/kling-video-v1.6-pro-effects"]["pricing"]["units"] == [
        {"name": "generation", "measure": "output", "price": 0.49, "per": 1}
    ]
    assert by_id["klingai/avatar-pro"]["pricing"]["kind"] == "variable"
    assert "kling-video/v1.5/standard/text-to-video" not in by_id  # retired
    assert [r.auth_ok for r in emu.requests] == [None]


def test_catalogue_without_include_leaves_prices_out(emu: KlingEmulator) -> None:
    models = get(emu, "/v1/models").json()["data"]
    assert len(models) == len(CURRENT)
    assert all("pricing" not in m for m in models)


@pytest.mark.parametrize(
    ("wanted", "found"),
    [
        (
            "klingai/video-v3-standard-turbo-image-to-video",
            ["klingai/video-v3-standard-turbo-image-to-video"],
        ),
        ("kling-video/v3/turbo/standard/image-to-video", ["klingai/video-v3-standard-turbo-image-to-video"]),
        ("acme/not-a-model", []),
        ("kling-video/v1.5/standard/text-to-video", []),
    ],
)
def test_catalogue_by_id_or_alias(emu: KlingEmulator, wanted: str, found: list[str]) -> None:
    answer = get(emu, "/v1/models", {"id": wanted, "include": "pricing"}).json()
    assert answer["object"] == "list"
    assert [m["id"] for m in answer["data"]] == found
    assert all("pricing" in m for m in answer["data"])


def test_single_model_route_is_wrapped_and_404_when_unknown(emu: KlingEmulator) -> None:
    resp = get(emu, "/model/kling-video/v3/turbo/pro/image-to-video", {"include": "pricing"})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["object"] == "model"
    assert answer["data"]["id"] == "klingai/video-v3-turbo-pro-image-to-video"
    assert answer["data"]["pricing"]["units"][0] == {
        "name": "second",
        "measure": "output",
        "price": 0.112,
        "per": 1,
    }
    missing = get(emu, "/model/acme/not-a-model", {"include": "pricing"})
    assert "acme/not-a-model" in service_error(missing, 404)


def test_etag_and_304(emu: KlingEmulator) -> None:
    first = get(emu, "/v1/models", {"include": "pricing"})
    tag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag)
    again = get(emu, "/v1/models", {"include": "pricing"}, **{"If-None-Match": tag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == tag
    weak = get(emu, "/v1/models", {"include": "pricing"}, **{"If-None-Match": f'"other", W/{tag}'})
    assert weak.status_code == 304
    stale = get(emu, "/v1/models", {"include": "pricing"}, **{"If-None-Match": '"stale"'})
    assert stale.status_code == 200
    assert stale.json() == first.json()
    # Another answer has another tag: a client cannot revalidate one with the other's.
    one = get(emu, f"/model/{V1}", {"include": "pricing"})
    assert one.headers["ETag"] != tag
    assert get(emu, f"/model/{V1}", {"include": "pricing"}, **{"If-None-Match": tag}).status_code == 200
    assert (
        get(emu, f"/model/{V1}", {"include": "pricing"}, **{"If-None-Match": one.headers["ETag"]}).status_code
        == 304
    )
    assert [r.status for r in emu.requests] == [200, 304, 304, 200, 200, 200, 304]


# ----------------------------------------------------------------------------- billing
@pytest.mark.parametrize(
    ("body", "usd"),
    [
        pytest.param({**V1_BODY, "duration": 10}, 0.84, id="variants-duration-v1"),
        pytest.param(
            {**V1_BODY, "model": "kling-video/v1.6/pro/image-to-video", "duration": 10},
            0.91,
            id="variants-duration-10-cheaper",
        ),
        pytest.param(
            {**V1_BODY, "model": "kling-video/v1.6/pro/image-to-video"},
            0.49,
            id="variants-duration-5-by-default",
        ),
        pytest.param(
            {
                "model": "klingai/video-v3-pro-text-to-video",
                "prompt": "x",
                "duration": 10,
                "generate_audio": False,
            },
            1.12,
            id="variants-silent",
        ),
        pytest.param(
            {"model": "klingai/video-v3-pro-text-to-video", "prompt": "x", "duration": 4},
            0.896,
            id="variants-audio-by-default",
        ),
        pytest.param(
            {"model": "kling-video/v3/turbo/pro/text-to-video", "prompt": "x", "duration": 6},
            0.672,
            id="fixed-per-second-by-alias",
        ),
        pytest.param(
            {
                "model": "klingai/kling-video-v1.6-pro-effects",
                "image_url": "https://example.com/a.png",
                "effect_scene": "pet_lion",
                "duration": 10,
            },
            0.49,
            id="fixed-per-generation",
        ),
    ],
)
@pytest.mark.parametrize("endpoint", ["legacy", "unified"])
def test_billing_follows_the_table(
    emu: KlingEmulator, body: dict[str, Any], usd: float, endpoint: str
) -> None:
    if endpoint == "legacy" and "duration" in body and catalog.model_entry(body["model"]).get("seed_names"):
        body = {**body, "duration": str(body["duration"])}  # the seed's text duration there
    assert pricing.price_usd(body["model"], body) == pytest.approx(usd)
    created = submit(emu, body, endpoint)
    assert created.status_code == 201, created.text
    gen_id = created.json()["id"]
    credits = round(usd * 2_000_000)
    assert billed(created) == (credits, pytest.approx(usd))
    assert created.json()["meta"]["usage"] == {"credits_used": credits, "usd_spent": pytest.approx(usd)}
    assert created.headers["x-inference-id"] == gen_id
    complete(emu, gen_id)
    done = poll(emu, gen_id, endpoint)
    assert done.json()["status"] == "completed"
    assert billed(done) == (credits, pytest.approx(usd))
    assert done.json()["meta"]["usage"]["credits_used"] == credits
    assert done.headers["x-inference-id"] == gen_id
    assert usage(emu).json()["spend"] == pytest.approx(usd)


@pytest.mark.parametrize("endpoint", ["legacy", "unified"])
@pytest.mark.parametrize("model", CURRENT)
def test_every_model_bills_what_the_table_quotes(emu: KlingEmulator, model: str, endpoint: str) -> None:
    body = expected_body(model, endpoint)
    created = submit(emu, body, endpoint)
    assert created.status_code == 201, created.text
    quoted = pricing.price_usd(model, body)
    kind = pricing.pricing_of(model)["kind"]  # type: ignore[index]
    assert (quoted is None) == (kind == "variable")
    charged = pricing.billed_usd(model, body)
    assert charged > 0
    if quoted is not None:
        assert charged == quoted
    assert billed(created) == (pricing.credits(charged), pytest.approx(charged))


def test_variable_model_is_billed_by_its_media_length(emu: KlingEmulator) -> None:
    body = {
        "model": "klingai/avatar-pro",
        "image_url": "https://example.com/face.png",
        "audio_url": "https://example.com/speech.mp3",
    }
    assert pricing.price_usd(body["model"], body) is None
    seconds = pricing.variable_seconds(body)
    assert 3 <= seconds <= 10
    assert seconds == pricing.variable_seconds(dict(body))  # the same URL, the same length
    _, usd = billed(submit(emu, body, "unified"))
    assert usd == pytest.approx(0.115 * seconds)


def test_2025_answers_keep_their_usage_and_bill_in_headers() -> None:
    with KlingEmulator(generation_seconds=60) as emu:
        created = submit(emu, {**V1_BODY, "duration": "10"})
        assert created.json()["meta"] == {"usage": {"tokens_used": 840_000}}
        assert billed(created) == (1_680_000, pytest.approx(0.84))


def test_a_failed_generation_is_billed_nothing(emu: KlingEmulator) -> None:
    ok = submit(emu, V1_BODY).json()["id"]
    failed = submit(emu, {**V1_BODY, "prompt": "[error] no face"})
    assert billed(failed) == (840_000, pytest.approx(0.42))  # the hold, before the outcome is known
    failed_id = failed.json()["id"]
    complete(emu, ok)
    complete(emu, failed_id)
    answer = poll(emu, failed_id)
    assert answer.json()["status"] == "error"
    assert billed(answer) == (0, 0.0)
    assert answer.json()["meta"]["usage"] == {"credits_used": 0, "usd_spent": 0.0}
    assert usage(emu).json()["spend"] == pytest.approx(0.42)
    assert usage(emu).json()["requests"] == 1
    rows = {row["inference_id"]: row for row in logs(emu).json()["data"]}
    assert rows[failed_id]["status"] == "failed"
    assert rows[failed_id]["cost"] == {"usd": 0.0, "credits": 0}
    assert rows[ok]["status"] == "succeeded"
    assert rows[ok]["cost"] == {"usd": 0.42, "credits": 840_000}


# ----------------------------------------------------------------------------- request ids
def test_valid_client_request_id_is_echoed_and_recorded(emu: KlingEmulator) -> None:
    crid = "dag.task:run_1-0_" + "x" * 111
    assert len(crid) == 128
    created = submit(emu, V1_BODY, "unified", **{"X-Client-Request-Id": crid})
    assert created.headers["x-client-request-id"] == crid
    gen_id = created.json()["id"]
    assert emu.generations[gen_id].client_request_id == crid
    assert emu.requests[-1].client_request_id == crid
    polled = poll(emu, gen_id, **{"X-Client-Request-Id": "poll-1"})
    assert polled.headers["x-client-request-id"] == "poll-1"
    refused = submit(emu, {**V1_BODY, "duration": 7}, **{"X-Client-Request-Id": "bad-duration"})
    assert refused.status_code == 400
    assert refused.headers["x-client-request-id"] == "bad-duration"
    recorded = requests.get(emu.base_url + "/_emulator/requests", timeout=5).json()
    assert [r["client_request_id"] for r in recorded] == [crid, "poll-1", "bad-duration"]
    [row] = logs(emu, {"period": "1h", "status": "succeeded"}).json()["data"]
    assert (row["client_request_id"], row["inference_id"]) == (crid, gen_id)


@pytest.mark.parametrize(
    "crid",
    ["x" * 129, "has space", "slash/inside", "ünïcode", "semi;colon", ""],
    ids=["129-chars", "space", "slash", "non-ascii", "semicolon", "empty"],
)
def test_invalid_client_request_id_is_dropped_and_the_request_still_billed(
    emu: KlingEmulator, crid: str
) -> None:
    created = requests.post(
        emu.base_url + API_PATH,
        json=V1_BODY,
        headers={**AUTH, "X-Client-Request-Id": crid.encode().decode("latin-1")},
        timeout=5,
    )
    assert created.status_code == 201, created.text
    assert "x-client-request-id" not in created.headers
    assert billed(created) == (840_000, pytest.approx(0.42))
    gen_id = created.json()["id"]
    assert emu.generations[gen_id].client_request_id is None
    assert emu.requests[-1].client_request_id is None
    [row] = logs(emu).json()["data"]
    assert row["inference_id"] == gen_id
    assert row["client_request_id"] is None


def test_every_answer_carries_an_inference_id(emu: KlingEmulator) -> None:
    answers = [
        get(emu, "/v1/models"),
        usage(emu),
        logs(emu),
        submit(emu, {**V1_BODY, "duration": 7}),
        requests.post(emu.base_url + API_PATH, json=V1_BODY, timeout=5),
    ]
    ids = [a.headers["x-inference-id"] for a in answers]
    assert len(set(ids)) == len(ids)
    assert [billed(a) for a in answers] == [(0, 0.0)] * len(answers)


def test_scripted_answers_stay_exactly_as_scripted(emu: KlingEmulator) -> None:
    emu.script(method="POST", status=201, body={"id": "x", "status": "queued"})
    resp = submit(emu, V1_BODY, **{"X-Client-Request-Id": "abc"})
    assert resp.json() == {"id": "x", "status": "queued"}
    assert not any(h.lower().startswith(("x-aimlapi", "x-inference", "x-client")) for h in resp.headers)


# ----------------------------------------------------------------------------- usage
def test_usage_counts_completed_charges_only(emu: KlingEmulator) -> None:
    assert usage(emu).json()["requests"] == 0
    done = [submit(emu, V1_BODY).json()["id"] for _ in range(2)]
    submit(emu, {**V1_BODY, "duration": "10"})  # still running: not charged yet
    for gen_id in done:
        complete(emu, gen_id)
    answer = usage(emu).json()
    assert set(answer) == {"api_key_prefix", "start", "end", "spend", "currency", "requests"}
    assert answer["api_key_prefix"] is None
    assert (answer["spend"], answer["currency"], answer["requests"]) == (0.84, "USD", 2)
    start = datetime.fromisoformat(answer["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(answer["end"].replace("Z", "+00:00"))
    assert end - start == timedelta(hours=24)
    # An explicit window with no offset is UTC; one that ended before the charges holds none of them.
    earlier = datetime.now(timezone.utc) - timedelta(days=3)
    window = {
        "start": earlier.strftime("%Y-%m-%dT%H:%M:%S"),
        "end": (earlier + timedelta(days=1)).isoformat(),
    }
    assert usage(emu, **window).json()["requests"] == 0
    window["end"] = (datetime.now(timezone.utc) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert usage(emu, **window).json()["spend"] == 0.84
    assert usage(emu, period="7d").json()["requests"] == 2


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"period": "0h"}, "period"),
        ({"period": "24x"}, "period"),
        ({"period": "93d"}, "period"),
        ({"period": "2209h"}, "period"),
        ({"period": "24h", "start": "2026-01-01"}, "period"),
        ({"start": "2026-01-01T00:00:00Z"}, "end"),
        ({"start": "2026-01-02", "end": "2026-01-01"}, "start"),
        ({"start": "2026-01-01", "end": "2026-04-03T00:00:01Z"}, "92 days"),
        ({"start": "yesterday", "end": "2026-01-01"}, "start"),
        ({}, "period"),
    ],
)
@pytest.mark.parametrize("route", ["/v2/usage", "/v2/logs"])
def test_window_errors_are_400_naming_the_parameter(
    emu: KlingEmulator, route: str, params: dict[str, str], named: str
) -> None:
    resp = requests.get(emu.base_url + route, params=params, headers=AUTH, timeout=5)
    assert named in service_error(resp, 400)


def test_92_days_is_allowed(emu: KlingEmulator) -> None:
    assert usage(emu, period="92d").status_code == 200
    assert usage(emu, start="2026-01-01", end="2026-04-03").status_code == 200


@pytest.mark.parametrize("route", ["/v2/usage", "/v2/logs"])
def test_spend_and_logs_need_the_key(emu: KlingEmulator, route: str) -> None:
    resp = requests.get(emu.base_url + route, params={"period": "24h"}, timeout=5)
    service_error(resp, 401)


# ----------------------------------------------------------------------------- logs
def test_logs_rows_filters_and_pages(emu: KlingEmulator) -> None:
    v3 = "klingai/video-v3-pro-text-to-video"
    first = submit(emu, V1_BODY, **{"X-Client-Request-Id": "r1"}).json()["id"]
    second = submit(emu, {"model": v3, "prompt": "x", "duration": 3}, "unified").json()["id"]
    third = submit(emu, {**V1_BODY, "prompt": "[error:2026] no"}).json()["id"]
    submit(emu, {**V1_BODY, "duration": 7})  # refused: a failed row with no generation
    answer = logs(emu).json()
    assert answer["pagination"] == {"limit": 50, "offset": 0, "total": 4, "has_more": False}
    rows = answer["data"]
    assert [r["inference_id"] for r in rows] == [None, third, second, first]  # newest first
    row = rows[3]
    assert set(row) == {
        "created",
        "status",
        "origin",
        "model",
        "cost",
        "tokens",
        "request_id",
        "inference_id",
        "client_request_id",
    }
    assert (row["status"], row["origin"], row["model"], row["client_request_id"]) == (
        "succeeded",
        "api",
        V1,
        "r1",
    )
    assert row["cost"] == {"usd": 0.42, "credits": 840_000}
    assert row["tokens"] == {"input": 0, "output": 420_000, "total": 420_000}
    uuid.UUID(row["request_id"])
    assert rows[0]["status"] == rows[1]["status"] == "failed"
    assert rows[0]["cost"] == rows[1]["cost"] == {"usd": 0.0, "credits": 0}

    def ids(params: list[tuple[str, str]]) -> list[str | None]:
        return [r["inference_id"] for r in logs(emu, [("period", "1h"), *params]).json()["data"]]

    assert ids([("model", v3)]) == [second]
    assert ids([("model", v3), ("model", V1)]) == [None, third, second, first]
    assert ids([("model", f"{v3},{V1}")]) == []  # a comma is read literally
    assert ids([("status", "failed")]) == [None, third]
    assert ids([("status", "failed"), ("status", "succeeded")]) == [None, third, second, first]
    assert ids([("model", V1), ("status", "succeeded")]) == [first]
    page = logs(emu, {"period": "1h", "limit": "2", "offset": "1"}).json()
    assert [r["inference_id"] for r in page["data"]] == [third, second]
    assert page["pagination"] == {"limit": 2, "offset": 1, "total": 4, "has_more": True}
    last = logs(emu, {"period": "1h", "limit": "2", "offset": "2"}).json()["pagination"]
    assert last["has_more"] is False


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"status": "pending"}, "status"),
    ],
)
def test_logs_parameter_errors(emu: KlingEmulator, params: dict[str, str], named: str) -> None:
    assert named in service_error(logs(emu, {"period": "24h", **params}), 400)


def test_logs_rows_appear_after_the_configured_delay(emu: KlingEmulator) -> None:
    emu.configure_account(logs_delay=3600, usage_delay=3600)
    gen_id = submit(emu, V1_BODY, **{"X-Client-Request-Id": "late-row"}).json()["id"]
    complete(emu, gen_id)
    assert logs(emu).json()["data"] == []
    assert usage(emu).json()["requests"] == 0
    assert [r["inference_id"] for r in emu.log_rows] == [gen_id]  # kept, just not shown yet
    emu.configure_account(logs_delay=0)
    [row] = logs(emu).json()["data"]
    assert (row["inference_id"], row["client_request_id"]) == (gen_id, "late-row")
    assert usage(emu).json()["requests"] == 0
    emu.configure_account(usage_delay=0)
    assert usage(emu).json()["requests"] == 1


def test_logs_allow_200_requests_per_minute_then_429(emu: KlingEmulator) -> None:
    with requests.Session() as session:
        session.headers.update(AUTH)
        statuses = [
            session.get(emu.base_url + "/v2/logs", params={"period": "24h"}, timeout=5).status_code
            for _ in range(201)
        ]
    assert statuses == [200] * 200 + [429]
    resp = logs(emu)
    assert service_error(resp, 429) == "Too Many Requests"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert usage(emu).status_code == 200  # the limit is the logs route's own


def test_logs_rate_limit_is_configurable(emu: KlingEmulator) -> None:
    emu.configure_account(logs_rate_limit=2)
    assert [logs(emu).status_code for _ in range(3)] == [200, 200, 429]
    emu.reset()
    assert emu.account_settings.logs_rate_limit == 200
    assert logs(emu).status_code == 200


# ----------------------------------------------------------------------------- spending limit
def test_spending_limit_answers_403_before_crossing(emu: KlingEmulator) -> None:
    emu.configure_account(spending_limit=0.9)
    first = submit(emu, V1_BODY).json()["id"]
    assert submit(emu, V1_BODY).status_code == 201  # 0.84 held, under 0.9
    refused = submit(emu, V1_BODY, **{"X-Client-Request-Id": "over-limit"})
    message = service_error(refused, 403)
    assert message.startswith(
        "You've run out of credits. Please top up your balance or update your payment method to continue: "
    )
    assert len(emu.generations) == 2
    assert billed(refused) == (0, 0.0)
    rows = logs(emu).json()["data"]
    assert (rows[0]["status"], rows[0]["inference_id"], rows[0]["client_request_id"]) == (
        "failed",
        None,
        "over-limit",
    )
    # A failed generation's hold is rolled back, which makes room again.
    failed = submit(emu, {**V1_BODY, "prompt": "[error] x"})
    assert failed.status_code == 403
    emu.configure_account(spending_limit=1.3)
    failed_id = submit(emu, {**V1_BODY, "prompt": "[error] x"}).json()["id"]
    assert submit(emu, V1_BODY).status_code == 403
    complete(emu, failed_id)
    assert submit(emu, V1_BODY).status_code == 201
    complete(emu, first)
    assert usage(emu).json()["spend"] == 0.42


def test_spending_limit_through_the_control_route(emu: KlingEmulator) -> None:
    r = requests.post(
        emu.base_url + "/_emulator/account",
        json={"spending_limit": 0.5, "spending_retention": "day"},
        timeout=5,
    )
    assert r.status_code == 200, r.text
    settings = requests.get(emu.base_url + "/_emulator/account", timeout=5).json()
    assert (settings["spending_limit"], settings["spending_retention"]) == (0.5, "day")
    assert submit(emu, V1_BODY).status_code == 201
    assert submit(emu, V1_BODY).status_code == 403


def test_spending_periods_start_at_utc_boundaries() -> None:
    now = datetime(2026, 12, 10, 15, 30, tzinfo=timezone.utc).timestamp()  # a Thursday
    assert period_start("no_reset", now) == 0
    assert period_start("day", now) == datetime(2026, 12, 10, tzinfo=timezone.utc).timestamp()
    assert period_start("week", now) == datetime(2026, 12, 7, tzinfo=timezone.utc).timestamp()
    assert period_start("month", now) == datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp()


# ----------------------------------------------------------------------------- switches
@pytest.mark.parametrize(
    ("switch", "path", "params"),
    [
        ("models", "/v1/models", {"include": "pricing"}),
        ("models", f"/model/{V1}", {"include": "pricing"}),
        ("usage", "/v2/usage", {"period": "24h"}),
        ("logs", "/v2/logs", {"period": "24h"}),
    ],
)
@pytest.mark.parametrize("status", [404, 405])
def test_each_route_can_be_turned_off(
    emu: KlingEmulator, switch: str, path: str, params: Any, status: int
) -> None:
    assert requests.get(emu.base_url + path, params=params, headers=AUTH, timeout=5).status_code == 200
    emu.configure_account(disabled={switch: status})
    resp = requests.get(emu.base_url + path, params=params, headers=AUTH, timeout=5)
    assert service_error(resp, status) == f"Cannot GET {path}"
    assert submit(emu, V1_BODY).status_code == 201  # generations go on
    emu.reset()
    assert requests.get(emu.base_url + path, params=params, headers=AUTH, timeout=5).status_code == 200


def test_headers_can_be_turned_off(emu: KlingEmulator) -> None:
    r = requests.post(
        emu.base_url + "/_emulator/account",
        json={"disabled": ["cost_headers", "client_request_id", "inference_id"]},
        timeout=5,
    )
    assert r.status_code == 200, r.text
    created = submit(emu, V1_BODY, **{"X-Client-Request-Id": "quiet"})
    assert created.status_code == 201
    assert not any(h.lower().startswith(("x-aimlapi", "x-inference", "x-client")) for h in created.headers)
    assert created.json()["meta"]["usage"]["credits_used"] == 840_000  # the body still says it
    assert logs(emu).json()["data"][0]["client_request_id"] is None


@pytest.mark.parametrize(
    "payload",
    [
        {"disabled": ["everything"]},
        {"disabled": {"logs": 500}},
        {"logs_delay": -1},
        {"spending_limit": -0.01},
        {"spending_retention": "year"},
        {"logs_rate_limit": 0},
        {"colour": "blue"},
        [1, 2],
    ],
)
def test_bad_account_settings_are_refused(emu: KlingEmulator, payload: Any) -> None:
    r = requests.post(emu.base_url + "/_emulator/account", json=payload, timeout=5)
    assert r.status_code == 400
    assert r.json()["ok"] is False
    assert emu.account_settings == KlingEmulator().account_settings


def test_constructor_settings_survive_reset() -> None:
    with KlingEmulator(account={"disabled": ["logs"], "logs_delay": 5}) as emu:
        emu.configure_account(disabled=[], logs_delay=0)
        emu.reset()
        assert dict(emu.account_settings.disabled) == {"logs": 404}
        assert emu.account_settings.logs_delay == 5
        service_error(logs(emu), 404)


def test_cli_flags_configure_the_account_side() -> None:
    cmd = [
        sys.executable,
        "-m",
        "airflow_provider_kling.emulator",
        "--port",
        "0",
        "--account-off",
        "logs",
        "--account-off",
        "models",
        "--logs-delay",
        "7",
        "--spending-limit",
        "1.5",
        "--spending-retention",
        "month",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            base = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
            settings = requests.get(base + "/_emulator/account", timeout=5).json()
            assert settings["disabled"] == {"logs": 404, "models": 404}
            assert (settings["logs_delay"], settings["spending_limit"]) == (7.0, 1.5)
            assert settings["spending_retention"] == "month"
            assert requests.get(base + "/v2/logs", params={"period": "1h"}, timeout=5).status_code == 404
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
