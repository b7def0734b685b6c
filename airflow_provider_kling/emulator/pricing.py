"""The emulator's price table: what each catalog model costs, quoted and billed by the same rules.

These are the emulator's own figures, plausible but invented: no Kling price is documented by the
service, whose catalogue route (``GET /v1/models?include=pricing``) is the only source of real ones.
Every current model of :mod:`airflow_provider_kling.catalog` has an entry, in one of the three
documented kinds:

- ``variants``: a USD rate per second of video chosen by body fields (``duration`` as text,
  ``generate_audio`` as a boolean, true when absent, as the service defaults it);
- ``fixed``: one unit, per second of video or per generation;
- ``variable``: cannot be quoted ahead of the request (the length follows the audio or source video).

:func:`price_usd` is the quote a client can compute from the catalogue route; :func:`billed_usd` is
what the emulator bills an accepted generation (the quote, or for a ``variable`` model its rate times
a length the emulator derives from the media URL); :func:`credits` turns USD into credits.
"""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
from collections.abc import Mapping
from typing import Any

from airflow_provider_kling import catalog

CREDITS_PER_USD = 2_000_000
#: The rate billed for a model the catalog does not know (the emulator accepts any id).
DEFAULT_USD_PER_SECOND = 0.084
#: Shown in every catalogue entry so no one takes these figures for the service's.
PRICE_NOTE = "Prices of the Kling emulator, not the service's: plausible figures for tests only."
#: A variable model bills this many seconds at least, plus up to VARIABLE_SPREAD - 1 more by URL.
VARIABLE_MIN_SECONDS = 3
VARIABLE_SPREAD = 8


def _by_duration(five: float, ten: float) -> dict[str, Any]:
    return {
        "kind": "variants",
        "currency": "USD",
        "dimensions": ["duration"],
        "variants": [
            {"when": {"duration": "5"}, "price": five, "unit": "second", "per": 1},
            {"when": {"duration": "10"}, "price": ten, "unit": "second", "per": 1},
        ],
    }


def _by_audio(with_audio: float, silent: float) -> dict[str, Any]:
    return {
        "kind": "variants",
        "currency": "USD",
        "dimensions": ["generate_audio"],
        "variants": [
            {"when": {"generate_audio": True}, "price": with_audio, "unit": "second", "per": 1},
            {"when": {"generate_audio": False}, "price": silent, "unit": "second", "per": 1},
        ],
    }


def _per_second(price: float) -> dict[str, Any]:
    return {
        "kind": "fixed",
        "currency": "USD",
        "units": [{"name": "second", "measure": "output", "price": price, "per": 1}],
    }


def _per_generation(price: float) -> dict[str, Any]:
    return {
        "kind": "fixed",
        "currency": "USD",
        "units": [{"name": "generation", "measure": "output", "price": price, "per": 1}],
    }


def _variable() -> dict[str, Any]:
    return {"kind": "variable", "currency": "USD", "note": "cannot be quoted ahead of the request"}


#: model id -> its ``pricing`` object as the catalogue route answers it.
PRICES: dict[str, dict[str, Any]] = {
    "kling-video/v1/standard/image-to-video": _by_duration(0.084, 0.084),
    "kling-video/v1/pro/image-to-video": _by_duration(0.098, 0.091),
    "kling-video/v1.5/standard/image-to-video": _by_duration(0.056, 0.052),
    "kling-video/v1.5/pro/image-to-video": _by_duration(0.098, 0.091),
    "kling-video/v1.6/pro/image-to-video": _by_duration(0.098, 0.091),
    "kling-video/v1.6/standard/image-to-video": _by_duration(0.056, 0.052),
    "kling-video/v1/standard/text-to-video": _by_duration(0.084, 0.084),
    "kling-video/v1/pro/text-to-video": _by_duration(0.098, 0.091),
    "kling-video/v1.6/pro/text-to-video": _by_duration(0.098, 0.091),
    "kling-video/v1.6/standard/text-to-video": _by_duration(0.056, 0.052),
    "klingai/v2-master-text-to-video": _per_second(0.28),
    "klingai/v2.1-master-text-to-video": _per_second(0.28),
    "kling-video/v1.6/standard/multi-image-to-video": _by_duration(0.056, 0.052),
    "klingai/kling-video-v1.6-standard-effects": _per_generation(0.28),
    "klingai/kling-video-v1.6-pro-effects": _per_generation(0.49),
    "klingai/v2-master-image-to-video": _per_second(0.28),
    "klingai/v2.1-master-image-to-video": _per_second(0.28),
    "kling-video/v2.1/standard/image-to-video": _per_second(0.056),
    "kling-video/v2.1/pro/image-to-video": _per_second(0.098),
    "klingai/v2.5-turbo/pro/image-to-video": _per_second(0.07),
    "klingai/v2.5-turbo/pro/text-to-video": _per_second(0.07),
    "klingai/avatar-standard": _variable(),
    "klingai/avatar-pro": _variable(),
    "klingai/video-v2-6-pro-text-to-video": _by_audio(0.14, 0.07),
    "klingai/video-v2-6-pro-image-to-video": _by_audio(0.14, 0.07),
    "klingai/video-o1-image-to-video": _by_duration(0.112, 0.105),
    "klingai/video-o1-reference-to-video": _by_duration(0.112, 0.105),
    "klingai/video-o1-video-to-video-edit": _variable(),
    "klingai/video-o1-video-to-video-reference": _by_duration(0.168, 0.16),
    "klingai/video-v2-6-motion-control": _variable(),
    "klingai/video-v3-motion-control": _variable(),
    "klingai/video-v3-standard-text-to-video": _by_audio(0.168, 0.084),
    "klingai/video-v3-standard-image-to-video": _by_audio(0.168, 0.084),
    "klingai/video-v3-pro-text-to-video": _by_audio(0.224, 0.112),
    "klingai/video-v3-pro-image-to-video": _by_audio(0.224, 0.112),
    "klingai/video-v3-standard-turbo-text-to-video": _per_second(0.084),
    "klingai/video-v3-standard-turbo-image-to-video": _per_second(0.084),
    "klingai/video-v3-turbo-pro-text-to-video": _per_second(0.112),
    "klingai/video-v3-turbo-pro-image-to-video": _per_second(0.112),
    "klingai/video-v3-omni-720p-text-to-video": _by_audio(0.168, 0.112),
    "klingai/video-v3-omni-720p-image-to-video": _by_audio(0.168, 0.112),
    "klingai/video-v3-omni-1080p-text-to-video": _by_audio(0.224, 0.168),
    "klingai/video-v3-omni-1080p-image-to-video": _by_audio(0.224, 0.168),
}

#: What a ``variable`` model bills per second once its length is known (never in the catalogue).
VARIABLE_RATES: dict[str, float] = {
    "klingai/avatar-standard": 0.056,
    "klingai/avatar-pro": 0.115,
    "klingai/video-o1-video-to-video-edit": 0.168,
    "klingai/video-v2-6-motion-control": 0.07,
    "klingai/video-v3-motion-control": 0.084,
}
#: The v3 motion control bills its ``pro`` mode at this rate instead.
V3_MOTION_PRO_RATE = 0.126


def canonical(model: str) -> str:
    """The catalog id ``model`` names (an alias resolved); ``model`` itself when it is no alias.

    :param model: a model id or alias.
    """
    return catalog.MODEL_ALIASES.get(model, model)


def pricing_of(model: str) -> dict[str, Any] | None:
    """The ``pricing`` object of ``model`` (id or alias) as the catalogue answers it; None when unlisted.

    :param model: a model id or alias.
    """
    entry = PRICES.get(canonical(model))
    return copy.deepcopy(entry) if entry is not None else None


def seconds_of(body: Mapping[str, Any]) -> int:
    """The seconds of video a body asks for: its ``duration`` (a number or digit text), else 5.

    :param body: the request body.
    """
    value = body.get("duration")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 5


def _as_text(value: Any) -> str:
    # Variant values compare as text: "5" and 5 are one duration, True and "true" one audio choice.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower()


def dimension_value(name: str, body: Mapping[str, Any]) -> Any:
    """The value of a pricing dimension for ``body``, with the service's default when it is absent.

    :param name: ``duration`` (text, "5" by default) or ``generate_audio`` (true by default); any other
        dimension reads the body field as it is.
    :param body: the request body.
    """
    if name == "duration":
        return str(seconds_of(body))
    if name == "generate_audio":
        value = body.get("generate_audio", True)
        return value if isinstance(value, bool) else _as_text(value) != "false"
    return body.get(name)


def price_usd(model: str, body: Mapping[str, Any]) -> float | None:
    """The quote for one generation of ``model`` with ``body``, from the catalogue's figures.

    :param model: a model id or alias.
    :param body: the request body (``duration``, ``generate_audio``...).
    :return: USD, rounded to 6 decimals (whole credits); None for a ``variable`` model, a model the
        catalogue does not list, or a body no variant matches.
    """
    pricing = PRICES.get(canonical(model))
    if pricing is None:
        return None
    if pricing["kind"] == "fixed":
        unit = pricing["units"][0]
        count = seconds_of(body) if unit["name"] == "second" else 1
        return round(unit["price"] * count / unit["per"], 6)
    if pricing["kind"] == "variants":
        wanted = {name: _as_text(dimension_value(name, body)) for name in pricing["dimensions"]}
        for variant in pricing["variants"]:
            if all(_as_text(variant["when"].get(name)) == value for name, value in wanted.items()):
                return round(variant["price"] * seconds_of(body) / variant["per"], 6)
        return None
    return None


def variable_seconds(body: Mapping[str, Any]) -> int:
    """The length the emulator bills a ``variable`` model for: the body's duration when it gives one,
    else 3..10 seconds derived from its ``audio_url`` or ``video_url`` (the same URL, the same length).

    :param body: the request body.
    """
    if body.get("duration") is not None:
        return seconds_of(body)
    media = str(body.get("audio_url") or body.get("video_url") or "")
    return VARIABLE_MIN_SECONDS + zlib.crc32(media.encode()) % VARIABLE_SPREAD


def billed_usd(model: str, body: Mapping[str, Any]) -> float:
    """What the emulator bills an accepted generation of ``model`` with ``body`` when it completes.

    The quote (:func:`price_usd`) when there is one; for a ``variable`` model its rate times
    :func:`variable_seconds`; for a model the catalog does not know, :data:`DEFAULT_USD_PER_SECOND`
    per second.

    :param model: a model id or alias.
    :param body: the request body.
    :return: USD, rounded to 6 decimals (whole credits).
    """
    quoted = price_usd(model, body)
    if quoted is not None:
        return quoted
    model_id = canonical(model)
    if model_id in VARIABLE_RATES:
        rate = VARIABLE_RATES[model_id]
        if model_id == "klingai/video-v3-motion-control" and body.get("mode") == "pro":
            rate = V3_MOTION_PRO_RATE
        return round(rate * variable_seconds(body), 6)
    return round(DEFAULT_USD_PER_SECOND * seconds_of(body), 6)


def credits(usd: float) -> int:
    """USD as whole credits (1 USD = 2,000,000 credits).

    :param usd: an amount in USD.
    """
    return round(usd * CREDITS_PER_USD)


def model_entry(model: str) -> dict[str, Any] | None:
    """One model as the catalogue route answers it (``id``, ``aliases``, ``type``, ``info``, ``tags``,
    ``pricing``), found by id or alias; None when the catalogue does not list it.

    :param model: a model id or alias.
    """
    model_id = canonical(model)
    entry = catalog.MODELS.get(model_id)
    if entry is None or model_id not in PRICES:
        return None
    aliases = [alias for alias, target in catalog.MODEL_ALIASES.items() if target == model_id]
    return {
        "id": model_id,
        "aliases": aliases,
        "type": "video",
        "info": {"name": model_id, "developer": "Kling AI", "note": PRICE_NOTE},
        "tags": [entry["kind"]],
        "pricing": copy.deepcopy(PRICES[model_id]),
    }


def catalogue() -> list[dict[str, Any]]:
    """Every priced model as the catalogue route answers it, in catalog order (retired ones left out)."""
    return [entry for model_id in catalog.current_models() if (entry := model_entry(model_id)) is not None]


def etag(payload: Any) -> str:
    """The strong ETag of a JSON answer: a digest of its canonical text.

    :param payload: the JSON value answered.
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
