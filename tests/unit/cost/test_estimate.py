"""Prices and estimates against the emulator over real sockets: for every model of the catalog and
each of its priced variants, the estimate the hook makes before paying equals what the emulator
bills, on both endpoints; the catalogue is read without a key, kept, and revalidated by ETag."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_kling import catalog
from airflow_provider_kling.cost import budget, prices
from airflow_provider_kling.exceptions import KlingConfigError
from tests.support.catalog_bodies import BODIES, request_fields
from tests.support.connections import API_KEY, use_connection
from tests.support.hooks import make_hook

CURRENT = [m for m in catalog.current_models() if m in BODIES]


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    prices.forget()
    budget.forget()
    yield
    prices.forget()
    budget.forget()


def _variants(emulator: Any) -> list[tuple[str, dict[str, Any] | None, str]]:
    """(model, the variant's ``when`` or None for the body as written, pricing kind) for every model."""
    answer = requests.get(f"{emulator.base_url}/v1/models", params={"include": "pricing"}, timeout=10)
    out = []
    for entry in answer.json()["data"]:
        if entry["id"] not in BODIES:
            continue
        pricing = entry["pricing"]
        if pricing["kind"] == "variants":
            out += [(entry["id"], v["when"], "variants") for v in pricing["variants"]]
        else:
            out.append((entry["id"], None, pricing["kind"]))
    return out


def _fields(model: str, when: dict[str, Any] | None) -> dict[str, Any]:
    fields = {"model": model, **request_fields(model)}
    for name, value in (when or {}).items():
        fields[name] = int(value) if name == "duration" else value
    if fields.get("generate_audio") is True:
        fields.pop("tail_image_url", None)  # not allowed with audio on the omni models
    return fields


@pytest.mark.parametrize("endpoint", ["legacy", "unified"])
def test_every_model_and_variant_is_estimated_as_the_emulator_bills(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    use_connection(
        monkeypatch, "kling_cost", host=emulator.base_url, password=API_KEY, extra={"endpoint": endpoint}
    )
    cases = _variants(emulator)
    assert {model for model, _, _ in cases} == set(CURRENT)
    assert len(cases) > len(CURRENT)  # the variants are there, not only one body per model
    with make_hook("kling_cost") as hook:
        for model, when, kind in cases:
            fields = _fields(model, when)
            estimate = hook.estimate(fields)
            generation = hook.submit(fields)
            billed = emulator.generations[generation.id].usd
            assert billed > 0
            if kind == "variable":
                assert estimate.usd is None, (model, estimate)
                assert "variable" in (estimate.reason or "")
            else:
                assert estimate.usd == pytest.approx(billed, abs=1e-6), (model, when, endpoint)
                assert estimate.source == "catalogue"


def test_the_catalogue_is_read_once_without_a_key_and_revalidated_by_etag(emulator: Any) -> None:
    with make_hook() as hook:
        first = hook.price("kling-video/v1.6/pro/image-to-video")
        hook.price("klingai/video-v3-pro-text-to-video")
        prices.expire(hook.endpoint.base_url)
        again = hook.price("kling-video/v1.6/pro/image-to-video")
    reads = [r for r in emulator.requests if r.path == prices.CATALOGUE_PATH]
    assert [r.status for r in reads] == [200, 304]
    # The 304 answers the If-None-Match of the kept ETag; the route needs no key (none is checked).
    assert all(r.auth_ok is None for r in reads)
    assert first is not None
    assert again == first


def test_an_alias_finds_its_model_price(emulator: Any) -> None:
    alias, target = next(iter(catalog.MODEL_ALIASES.items()))
    with make_hook() as hook:
        assert hook.price(alias) is not None
        assert hook.price(alias).pricing == hook.price(target).pricing  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [404, 405])
def test_a_catalogue_not_offered_falls_back_to_the_prices_extra_or_none(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    emulator.configure_account(disabled={"models": status})
    use_connection(
        monkeypatch,
        "kling_cost",
        host=emulator.base_url,
        password=API_KEY,
        extra={"prices": {"kling-video/v1.6/pro/image-to-video": 0.1}},
    )
    with caplog.at_level("WARNING"), make_hook("kling_cost") as hook:
        known = hook.estimate({**_fields("kling-video/v1.6/pro/image-to-video", None), "duration": 10})
        unknown = hook.estimate(_fields("kling-video/v1.6/pro/text-to-video", None))
        hook.estimate(_fields("kling-video/v1.6/pro/text-to-video", None))
    assert known.usd == pytest.approx(1.0)
    assert known.source == "connection"
    assert unknown.usd is None
    assert unknown.reason == "no price for this model"
    said = [r.getMessage() for r in caplog.records if "does not offer its price list" in r.getMessage()]
    assert len(said) == 1
    assert str(status) in said[0]
    assert emulator.count("GET", prices.CATALOGUE_PATH) == 1  # not asked again once it said no


def test_the_prices_extra_overrides_the_catalogue_per_variant(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = {
        "kind": "variants",
        "dimensions": ["generate_audio"],
        "variants": [
            {"when": {"generate_audio": True}, "price": 1.0, "unit": "second", "per": 1},
            {"when": {"generate_audio": False}, "price": 0.5, "unit": "second", "per": 1},
        ],
    }
    model = "klingai/video-v2-6-pro-text-to-video"
    use_connection(
        monkeypatch, "kling_cost", host=emulator.base_url, password=API_KEY, extra={"prices": {model: audio}}
    )
    with make_hook("kling_cost") as hook:
        loud = hook.estimate({"model": model, "prompt": "x", "duration": 5})
        quiet = hook.estimate({"model": model, "prompt": "x", "duration": 10, "generate_audio": False})
    assert (loud.usd, quiet.usd) == (5.0, 5.0)
    assert emulator.count("GET", prices.CATALOGUE_PATH) == 0


@pytest.mark.parametrize(
    "bad", [{"m": "cheap"}, {"m": -1}, {"m": {"kind": "fixed"}}, {"m": {"kind": "guess"}}, ["m"]]
)
def test_a_bad_prices_extra_is_refused_naming_it(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, bad: Any
) -> None:
    use_connection(monkeypatch, "kling_cost", host=emulator.base_url, password=API_KEY, extra={"prices": bad})
    with make_hook("kling_cost") as hook, pytest.raises(KlingConfigError, match="prices"):
        hook.price("m")


def test_a_request_without_generate_audio_is_priced_as_the_service_defaults_it(emulator: Any) -> None:
    answer = requests.get(f"{emulator.base_url}/v1/models", params={"include": "pricing"}, timeout=10)
    audio = [
        e["id"]
        for e in answer.json()["data"]
        if e["id"] in BODIES and "generate_audio" in (e["pricing"].get("dimensions") or [])
    ]
    assert audio
    with make_hook() as hook:
        for model in audio:
            fields = {k: v for k, v in _fields(model, None).items() if k != "generate_audio"}
            fields.pop("tail_image_url", None)  # the service turns audio on: no tail image then
            generation = hook.submit(fields)
            assert hook.estimate(fields).usd == pytest.approx(emulator.generations[generation.id].usd), model
