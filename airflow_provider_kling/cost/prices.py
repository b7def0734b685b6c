"""Model prices: the service's catalogue route and the connection's ``prices`` extra.

The catalogue (``GET /v1/models?include=pricing``) needs no key; its answer is kept per process and
base URL and revalidated with ``If-None-Match`` once it is older than :data:`REVALIDATE_AFTER`. A 404
or 405 means the route is not offered: said once per process, and prices then come from the
connection's ``prices`` extra or are unknown (None). A price is never guessed.

A price is a ``pricing`` object as the catalogue documents it (``fixed``, ``variants`` or
``variable``); the extra takes the same objects, or a plain number meaning USD per second of video.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from airflow_provider_kling.exceptions import KlingConfigError
from airflow_provider_kling.hooks._connection import _Endpoint, _NoAuth

#: The catalogue route, relative to the connection's base URL.
CATALOGUE_PATH = "/v1/models"
#: Seconds a fetched catalogue is used before it is revalidated (a 304 keeps it).
REVALIDATE_AFTER = 300.0
#: Most bytes of a catalogue answer read.
MAX_CATALOGUE_BYTES = 8 * 1024 * 1024
#: The connection extra holding prices (model -> USD per second, or a ``pricing`` object).
PRICES_EXTRA = "prices"
PRICING_KINDS = ("fixed", "variants", "variable")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
    """One model's price and where it was read.

    :param model: the model id asked about.
    :param pricing: the ``pricing`` object (``kind`` ``fixed``, ``variants`` or ``variable``).
    :param source: ``catalogue`` (the service's route) or ``connection`` (the ``prices`` extra).
    """

    model: str
    pricing: Mapping[str, Any]
    source: str

    @property
    def kind(self) -> str:
        return str(self.pricing.get("kind"))


@dataclass
class _Catalogue:
    """One base URL's catalogue: models by id and alias, its ETag, when it was last (re)validated."""

    by_name: dict[str, dict[str, Any]]
    etag: str | None
    checked: float


# base URL -> its catalogue; base URL -> the status that said the route is not offered.
_CATALOGUES: dict[str, _Catalogue] = {}
_NOT_OFFERED: dict[str, int] = {}
_LOCK = threading.Lock()


def per_second(usd: float) -> dict[str, Any]:
    """A ``fixed`` pricing object of ``usd`` per second of video (the extra's number form).

    :param usd: USD per second.
    """
    return {"kind": "fixed", "currency": "USD", "units": [{"name": "second", "price": usd, "per": 1}]}


def check_pricing(pricing: Any, where: str) -> dict[str, Any]:
    """A ``pricing`` object checked for the fields an estimate reads; KlingConfigError names ``where``.

    :param pricing: a number (USD per second) or a ``pricing`` object.
    :param where: what to name in the error, e.g. ``connection 'kling_default': prices['model']``.
    """
    if isinstance(pricing, (int, float)) and not isinstance(pricing, bool):
        if pricing < 0:
            raise KlingConfigError(f"{where}: a price must be 0 or more USD per second, got {pricing!r}")
        return per_second(float(pricing))
    if not isinstance(pricing, Mapping) or pricing.get("kind") not in PRICING_KINDS:
        raise KlingConfigError(
            f"{where}: must be USD per second of video (a number) or a pricing object whose kind is one "
            f"of {', '.join(PRICING_KINDS)}, got {pricing!r}"
        )
    entries = pricing.get("units") if pricing["kind"] == "fixed" else pricing.get("variants")
    if pricing["kind"] != "variable":
        if not isinstance(entries, list) or not entries:
            field = "units" if pricing["kind"] == "fixed" else "variants"
            raise KlingConfigError(f"{where}: a {pricing['kind']} price needs a non-empty list {field!r}")
        for entry in entries:
            price = entry.get("price") if isinstance(entry, Mapping) else None
            per = entry.get("per", 1) if isinstance(entry, Mapping) else None
            if not isinstance(price, (int, float)) or not isinstance(per, (int, float)) or per <= 0:
                raise KlingConfigError(f"{where}: each entry needs a number 'price' and a 'per' above 0")
    return dict(pricing)


def prices_from_extra(extra: Mapping[str, Any], conn_id: str) -> dict[str, dict[str, Any]]:
    """The connection's ``prices`` extra as model -> pricing object; KlingConfigError names a bad entry.

    :param extra: the connection's extra.
    :param conn_id: the connection, for messages.
    """
    raw = extra.get(PRICES_EXTRA)
    if raw is None:
        return {}
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):  # text that is not JSON fails just below
            raw = json.loads(raw)
    if not isinstance(raw, Mapping):
        raise KlingConfigError(
            f"Connection {conn_id!r}: the extra {PRICES_EXTRA!r} must map model ids to USD per second "
            f'(e.g. {{"kling-video/v1.6/pro/image-to-video": 0.098}}) or to pricing objects'
        )
    return {
        str(model): check_pricing(value, f"Connection {conn_id!r}: {PRICES_EXTRA}[{model!r}]")
        for model, value in raw.items()
    }


def _read(resp: requests.Response) -> bytes:
    body = bytearray()
    for piece in resp.iter_content(64 * 1024):
        body += piece
        if len(body) > MAX_CATALOGUE_BYTES:
            raise ValueError(f"more than {MAX_CATALOGUE_BYTES} bytes")
    return bytes(body)


def _index(data: Any) -> dict[str, dict[str, Any]]:
    """Models by id and by each alias (an id wins over another model's alias)."""
    models = data.get("data") if isinstance(data, Mapping) else data
    if isinstance(models, Mapping):  # /model/<id> wraps one model
        models = [models]
    by_name: dict[str, dict[str, Any]] = {}
    for entry in models if isinstance(models, list) else []:
        if not isinstance(entry, Mapping) or not entry.get("id"):
            continue
        for alias in entry.get("aliases") or []:
            by_name.setdefault(str(alias), dict(entry))
    for entry in models if isinstance(models, list) else []:
        if isinstance(entry, Mapping) and entry.get("id"):
            by_name[str(entry["id"])] = dict(entry)
    return by_name


def catalogue(
    session: requests.Session, base_url: str, timeout: tuple[float, float]
) -> dict[str, dict[str, Any]] | None:
    """The service's models by id and alias, fetched once per process and revalidated by ETag.

    :param session: a requests session (no key is sent: the route needs none).
    :param base_url: the connection's base URL.
    :param timeout: (connect, read) timeouts.
    :return: the models, or None when the route is not offered or cannot be read now.
    """
    with _LOCK:
        if base_url in _NOT_OFFERED:
            return None
        known = _CATALOGUES.get(base_url)
        if known is not None and time.monotonic() - known.checked < REVALIDATE_AFTER:
            return known.by_name
    headers = {"Accept": "application/json"}
    if known is not None and known.etag:
        headers["If-None-Match"] = known.etag
    url = f"{base_url}{CATALOGUE_PATH}"
    try:
        with session.get(
            url,
            params={"include": "pricing"},
            headers=headers,
            auth=_NoAuth(),
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        ) as resp:
            status = resp.status_code
            body = _read(resp) if status == 200 else b""
            etag = resp.headers.get("ETag")
    except (requests.RequestException, ValueError) as exc:
        log.warning("Prices: the catalogue %s could not be read (%s); prices unknown for now", url, exc)
        return known.by_name if known is not None else None
    with _LOCK:
        if status == 304 and known is not None:
            known.checked = time.monotonic()
            return known.by_name
        if status in (404, 405):
            _NOT_OFFERED[base_url] = status
            log.warning(
                "Prices: %s answered %s to GET %s: the service does not offer its price list here. "
                "Prices come from the connection's %r extra only; models without one have no estimate.",
                base_url,
                status,
                CATALOGUE_PATH,
                PRICES_EXTRA,
            )
            return None
        if status != 200:
            log.warning("Prices: GET %s answered %s; prices unknown for now", url, status)
            return known.by_name if known is not None else None
        try:
            by_name = _index(json.loads(body))
        except ValueError:
            log.warning("Prices: GET %s answered a body that is not JSON; prices unknown for now", url)
            return None
        _CATALOGUES[base_url] = _Catalogue(by_name, etag, time.monotonic())
        log.info("Prices: read %s model entries from %s%s", len(by_name), base_url, CATALOGUE_PATH)
        return by_name


def not_offered(base_url: str) -> int | None:
    """The status (404 or 405) with which ``base_url`` said it offers no catalogue, or None.

    :param base_url: the connection's base URL.
    """
    with _LOCK:
        return _NOT_OFFERED.get(base_url)


def forget(base_url: str | None = None) -> None:
    """Drop what this process knows of a catalogue (all of them when ``base_url`` is None).

    :param base_url: the connection's base URL.
    """
    with _LOCK:
        for table in (_CATALOGUES, _NOT_OFFERED):
            if base_url is None:
                table.clear()
            else:
                table.pop(base_url, None)


def expire(base_url: str) -> None:
    """Mark a fetched catalogue as due for revalidation (its next read sends ``If-None-Match``).

    :param base_url: the connection's base URL.
    """
    with _LOCK:
        known = _CATALOGUES.get(base_url)
        if known is not None:
            known.checked = float("-inf")


def price_for(
    model: str, endpoint: _Endpoint, session: requests.Session, timeout: tuple[float, float]
) -> Price | None:
    """The price of ``model`` on a connection: its ``prices`` extra, else the service's catalogue.

    :param model: a model id or alias.
    :param endpoint: the connection's endpoint (its ``prices`` extra and base URL).
    :param session: the hook's session, for the catalogue.
    :param timeout: (connect, read) seconds for the catalogue's answer.
    :return: the price, or None when neither gives one.
    """
    from airflow_provider_kling.catalog import MODEL_ALIASES

    overrides = prices_from_extra({PRICES_EXTRA: endpoint.prices}, endpoint.conn_id)
    found = find_price(model, overrides, None, MODEL_ALIASES)
    if found is not None:
        return found
    return find_price(model, overrides, catalogue(session, endpoint.base_url, timeout), MODEL_ALIASES)


def find_price(
    model: str,
    overrides: Mapping[str, Mapping[str, Any]],
    models: Mapping[str, Mapping[str, Any]] | None,
    aliases: Mapping[str, str] | None = None,
) -> Price | None:
    """The price of ``model``: the connection's override first, then the catalogue (id or alias).

    :param model: the model id as requested.
    :param overrides: the connection's ``prices`` extra (see :func:`prices_from_extra`).
    :param models: the catalogue by id and alias, or None when it cannot be read.
    :param aliases: the provider's own alias -> id table, so an override under either name applies.
    """
    names = [model]
    if aliases and aliases.get(model):
        names.append(aliases[model])
    names += [alias for alias, target in (aliases or {}).items() if target == model]
    for name in names:
        if name in overrides:
            return Price(model, overrides[name], "connection")
    for name in names:
        entry = (models or {}).get(name)
        if entry is not None and isinstance(entry.get("pricing"), Mapping):
            return Price(model, entry["pricing"], "catalogue")
    return None


__all__ = [
    "CATALOGUE_PATH",
    "PRICES_EXTRA",
    "Price",
    "catalogue",
    "check_pricing",
    "expire",
    "find_price",
    "forget",
    "not_offered",
    "per_second",
    "prices_from_extra",
]
