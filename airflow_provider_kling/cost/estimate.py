"""One request's estimated price: the request's body read against a model's ``pricing`` object.

The same reading as the service documents: a ``fixed`` price counts its unit (a second of video, or
one generation), a ``variants`` price picks the variant whose ``when`` matches the body's dimensions
(``duration``, ``generate_audio``, ``resolution``, ``mode``...), and ``price`` is always read with
``per``. A ``variable`` price, a token unit, or a dimension the body does not set (with no documented
default) has no estimate: None, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_kling.cost.prices import Price

#: Seconds of video the service makes when a request names no duration (Kling's default).
DEFAULT_SECONDS = 5
#: Defaults the service documents for pricing dimensions a body may leave out.
DIMENSION_DEFAULTS: dict[str, Any] = {"generate_audio": True}
#: Units counted per second of video, and units counted once per generation.
SECOND_UNITS = ("second", "seconds", "sec", "s")
GENERATION_UNITS = ("generation", "request", "video", "item")


@dataclass(frozen=True)
class Estimate:
    """What one request is expected to cost, and why.

    :param model: the model id asked for.
    :param usd: the estimate in USD (rounded to whole credits), or None when it cannot be quoted.
    :param seconds: the seconds of video asked for (or the default).
    :param source: where the price came from (``catalogue``, ``connection``) or None.
    :param reason: why there is no estimate (None when there is one).
    """

    model: str
    usd: float | None
    seconds: int
    source: str | None = None
    reason: str | None = None

    def describe(self) -> str:
        """The estimate for a log line, e.g. ``$0.4200 (5 s, catalogue price)``."""
        if self.usd is None:
            return f"unknown ({self.reason})"
        return f"${self.usd:.4f} ({self.seconds} s, {self.source} price)"


def seconds_of(body: Mapping[str, Any]) -> int:
    """The seconds of video ``body`` asks for: its ``duration`` (a number or digit text), else 5.

    :param body: the request body.
    """
    value = body.get("duration")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    return DEFAULT_SECONDS


def _text(value: Any) -> str:
    # Variant values compare as text: 5 and "5" are one duration, True and "true" one audio choice.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().lower()


def _dimension(name: str, body: Mapping[str, Any]) -> Any:
    if name == "duration":
        return seconds_of(body)
    value = body.get(name)
    return DIMENSION_DEFAULTS.get(name) if value is None else value


def _count(unit: Mapping[str, Any], seconds: int) -> int | None:
    name = str(unit.get("unit") or unit.get("name") or "second").lower()
    if name in SECOND_UNITS:
        return seconds
    if name in GENERATION_UNITS:
        return 1
    return None  # tokens and any unit a video request cannot count ahead


def quote(price: Price | None, body: Mapping[str, Any]) -> Estimate:
    """The estimate of one request.

    :param price: the model's price (None: unknown).
    :param body: the request body as it is sent (``model``, ``duration``, ``generate_audio``...).
    """
    model = str(body.get("model") or (price.model if price else ""))
    seconds = seconds_of(body)
    if price is None:
        return Estimate(model, None, seconds, reason="no price for this model")
    pricing = price.pricing
    kind = pricing.get("kind")
    chosen: Mapping[str, Any] | None = None
    if kind == "fixed":
        units = pricing.get("units") or []
        chosen = units[0] if len(units) == 1 else None
        if chosen is None:
            return Estimate(model, None, seconds, price.source, "a price of several units")
    elif kind == "variants":
        dims = list(pricing.get("dimensions") or [])
        wanted = {}
        for name in dims:
            value = _dimension(name, body)
            if value is None:
                return Estimate(model, None, seconds, price.source, f"the request does not set {name!r}")
            wanted[name] = _text(value)
        for variant in pricing.get("variants") or []:
            when = variant.get("when") or {}
            if all(_text(when.get(name)) == value for name, value in wanted.items()):
                chosen = variant
                break
        if chosen is None:
            shown = ", ".join(f"{k}={v}" for k, v in wanted.items())
            return Estimate(model, None, seconds, price.source, f"no price variant for {shown}")
    else:
        return Estimate(model, None, seconds, price.source, "the price cannot be quoted ahead (variable)")
    count = _count(chosen, seconds)
    if count is None:
        return Estimate(model, None, seconds, price.source, "priced in units a video cannot count ahead")
    usd = float(chosen["price"]) * count / float(chosen.get("per") or 1)
    # Whole credits (1 USD = 2,000,000 credits), as the service bills.
    return Estimate(model, round(round(usd * 2_000_000) / 2_000_000, 6), seconds, price.source)


def total(estimates: list[Estimate]) -> tuple[float, int]:
    """The sum of the known estimates and the count of unknown ones.

    :param estimates: the estimates to add up.
    """
    known = [e.usd for e in estimates if e.usd is not None]
    return round(sum(known), 6), len(estimates) - len(known)


def by_model(estimates: list[Estimate]) -> dict[str, tuple[int, float, int]]:
    """Per model: (requests, USD of the known estimates, count of unknown ones).

    :param estimates: the estimates to group.
    """
    out: dict[str, tuple[int, float, int]] = {}
    for e in estimates:
        n, usd, unknown = out.get(e.model, (0, 0.0, 0))
        out[e.model] = (n + 1, round(usd + (e.usd or 0.0), 6), unknown + (e.usd is None))
    return out


__all__ = ["DEFAULT_SECONDS", "Estimate", "by_model", "quote", "seconds_of", "total"]
