"""The endpoint a ``kling`` connection names: base URL, API key, auth, key masking, user agent.

The connection is checked once and turned into an :class:`_Endpoint`; the key travels only through
:class:`_BearerAuth` (sync) or the async path's headers, and is registered with Airflow's secret
masker once per process.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.auth

from airflow_provider_kling.catalog import DEFAULT_ENDPOINT, ENDPOINT_PATHS
from airflow_provider_kling.exceptions import KlingConfigError
from airflow_provider_kling.hooks._reconcile import ReconcileSettings
from airflow_provider_kling.utils.urls import is_loopback, netloc, split_http_url

DEFAULT_BASE_URL = "https://api.apilaplas.com"
#: The seed's (legacy) generation path; the connection's ``endpoint`` extra may pick the unified one.
GENERATION_PATH = ENDPOINT_PATHS["legacy"]
#: The connection extra that lets downloads reach loopback hosts (and plain http to them): for the emulator.
ALLOW_LOOPBACK_DOWNLOADS = "allow_loopback_downloads"
#: The connection extra naming an object-storage prefix (``s3://bucket/kling-inputs/``) where local
#: input files the service cannot take as Base64 (audio, video) are uploaded once, by content, and
#: handed to the service as short-lived presigned URLs. Unset: such files are refused before any POST.
INPUT_STAGING = "input_staging"
#: Schemes an ``input_staging`` prefix may use: stores whose objects can be presigned.
STAGING_SCHEMES = ("s3", "s3a", "gs", "gcs")


@dataclass(frozen=True)
class _Endpoint:
    """Where to call and with what key; the key is kept out of repr.

    :param api: which of the service's endpoints new generations go to: ``legacy`` or ``unified``.
    :param host_text: the connection's host as written (for messages).
    :param assumed_https: the host had no scheme and https was assumed.
    :param allow_loopback_downloads: the connection allows video downloads from loopback hosts.
    :param input_staging: the connection's ``input_staging`` prefix (an ``s3://`` or ``gs://`` URL
        ending in ``/``), or None.
    :param reconcile: how long and how often a POST whose answer was lost is looked for in ``/v2/logs``.
    :param prices: the connection's ``prices`` extra as written (model -> price), checked when read.
    :param daily_usd_cap: the connection's ``daily_usd_cap`` extra: most USD the key may spend per UTC day.
    """

    base_url: str
    api_key: str
    api: str = DEFAULT_ENDPOINT
    conn_id: str = "?"
    host_text: str = ""
    assumed_https: bool = False
    allow_loopback_downloads: bool = False
    input_staging: str | None = None
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    prices: Any = field(default=None, compare=False)
    daily_usd_cap: float | None = None

    def __repr__(self) -> str:
        return f"_Endpoint(base_url={self.base_url!r}, api={self.api!r}, api_key=***)"

    def path(self, api: str | None = None) -> str:
        """The generation path of ``api`` (default: the connection's endpoint)."""
        return ENDPOINT_PATHS[api or self.api]

    @property
    def headers(self) -> dict[str, str]:
        """Headers of an API call; the key itself travels through :class:`_BearerAuth`."""
        return {"Accept": "application/json"}

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}


class _BearerAuth(requests.auth.AuthBase):
    """The connection's key as requests auth: requests reads ``~/.netrc`` only when auth is None."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "_BearerAuth(***)"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._key}"
        return request


class _NoAuth(requests.auth.AuthBase):
    """No credentials at all (video hosts): also keeps a ``~/.netrc`` entry from being sent."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


def endpoint_from_connection(conn: Any) -> _Endpoint:
    """Check a ``kling`` connection and turn it into the base URL and key to call with.

    The base URL is rebuilt from the parsed scheme, host name, port and path only: user information,
    backslashes, whitespace, control characters, a query or a fragment in the host are refused, so
    the host checked is the host connected to.

    :param conn: an Airflow Connection.
    :raises KlingConfigError: no key, a host that is not a URL, or plain http to a non-loopback host.
    """
    conn_id = getattr(conn, "conn_id", None) or "?"
    key = (conn.password or "").strip()
    if not key:
        raise KlingConfigError(
            f"Connection {conn_id!r} has no API key: put the Apilaplas key in its password field "
            "(labelled 'API Key')"
        )
    host_text = (conn.host or "").strip()
    host = host_text or DEFAULT_BASE_URL
    assumed_https = False
    if "://" not in host:
        assumed_https = not conn.schema
        host = f"{conn.schema or 'https'}://{host}"
    try:
        scheme, hostname, port, path = split_http_url(host, "host")
    except ValueError as exc:
        raise KlingConfigError(
            f"Connection {conn_id!r}: {exc}; leave it empty for {DEFAULT_BASE_URL} or give a full URL "
            "such as https://api.example.com"
        ) from None
    parts = urlsplit(host)
    if parts.query or parts.fragment or host.rstrip("/").endswith(("?", "#")):
        raise KlingConfigError(
            f"Connection {conn_id!r}: host {host!r} has a query or a fragment; give the base URL only, "
            f"such as {DEFAULT_BASE_URL}"
        )
    if scheme == "http" and not is_loopback(hostname):
        raise KlingConfigError(
            f"Connection {conn_id!r}: host {host!r} uses plain http; only https is allowed except "
            "to a loopback host (127.0.0.1, localhost, ::1), so the API key never crosses a network "
            "in clear"
        )
    if conn.port and not port:
        port = int(conn.port)
        host_text = f"{host_text}:{port}" if host_text else host_text
    base = f"{scheme}://{netloc(hostname, port)}{path.rstrip('/')}"
    return _Endpoint(
        base_url=base,
        api_key=key,
        api=endpoint_choice(conn),
        conn_id=conn_id,
        host_text=host_text,
        assumed_https=assumed_https,
        allow_loopback_downloads=_allow_loopback(conn, conn_id),
        input_staging=input_staging(conn),
        reconcile=ReconcileSettings.from_connection(conn),
        prices=_extra(conn).get("prices"),
        daily_usd_cap=_daily_cap(conn, conn_id),
    )


def input_staging(conn: Any) -> str | None:
    """The connection's ``input_staging`` extra as a prefix ending in ``/``, or None when unset.

    :param conn: an Airflow Connection.
    :raises KlingConfigError: the extra is not an ``s3://`` / ``gs://`` URL with a bucket.
    """
    conn_id = getattr(conn, "conn_id", None) or "?"
    value = _extra(conn).get(INPUT_STAGING)
    if value in (None, ""):
        return None
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in STAGING_SCHEMES or not parts.netloc or parts.query or parts.fragment:
        raise KlingConfigError(
            f"Connection {conn_id!r}: {INPUT_STAGING} {text!r} must be an object-storage prefix whose "
            f"objects can be presigned ({', '.join(s + '://' for s in STAGING_SCHEMES)}), e.g. "
            "s3://bucket/kling-inputs/ or s3://aws_conn_id@bucket/kling-inputs/"
        )
    return text if text.endswith("/") else f"{text}/"


def _daily_cap(conn: Any, conn_id: str) -> float | None:
    """The ``daily_usd_cap`` extra: a number of USD above 0, or None when not set.

    The form stores a number (Airflow 3.2+) or its text (Airflow 2.11 to 3.1, or JSON written by hand):
    both are read; empty means no cap.
    """
    raw = _extra(conn).get("daily_usd_cap")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        cap = float(raw)
    except (TypeError, ValueError):
        cap = -1.0
    if isinstance(raw, bool) or not cap > 0 or cap == float("inf"):
        raise KlingConfigError(
            f"Connection {conn_id!r}: the extra 'daily_usd_cap' must be a number of USD above 0 (the most "
            f"the key may spend per UTC day, e.g. 25), or empty for no cap; got {raw!r}"
        )
    return cap


#: How the form and hand-written JSON spell the ``allow_loopback_downloads`` switch.
_TRUE_TEXT = ("true", "1")
_FALSE_TEXT = ("false", "0", "")


def _allow_loopback(conn: Any, conn_id: str) -> bool:
    """The ``allow_loopback_downloads`` extra: a boolean, its text, 1/0, or unset (off).

    :raises KlingConfigError: any other value, rather than silently leaving the switch off.
    """
    raw = _extra(conn).get(ALLOW_LOOPBACK_DOWNLOADS)
    if raw is None:
        return False
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _TRUE_TEXT + _FALSE_TEXT:
        return raw.strip().lower() in _TRUE_TEXT
    raise KlingConfigError(
        f"Connection {conn_id!r}: the extra {ALLOW_LOOPBACK_DOWNLOADS!r} must be true or false (true only "
        f"to download videos from a local emulator on a loopback host), got {raw!r}"
    )


def _extra(conn: Any) -> dict[str, Any]:
    try:
        extra = conn.extra_dejson or {}
    except Exception:  # a malformed extra: Airflow itself already logs it
        extra = {}
    return extra if isinstance(extra, dict) else {}


def endpoint_choice(conn: Any) -> str:
    """The connection's ``endpoint`` extra: ``legacy`` (the default) or ``unified``."""
    conn_id = getattr(conn, "conn_id", None) or "?"
    choice = str(_extra(conn).get("endpoint") or DEFAULT_ENDPOINT).strip().lower()
    if choice not in ENDPOINT_PATHS:
        raise KlingConfigError(
            f"Connection {conn_id!r}: endpoint {choice!r} is not one of {', '.join(ENDPOINT_PATHS)} "
            f"(legacy: {ENDPOINT_PATHS['legacy']}, unified: {ENDPOINT_PATHS['unified']})"
        )
    return choice


# Connection lookups in flight per (event loop, connection id); see KlingHook.aendpoint.
_ENDPOINT_LOOKUPS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, asyncio.Task[_Endpoint]]
] = weakref.WeakKeyDictionary()


def _forget(lookups: dict[str, Any], key: str, done: Any) -> None:
    if lookups.get(key) is done:
        del lookups[key]


# Digests of the keys already registered with Airflow's secret masker in this process: each
# registration is logged (at debug) and sent to the supervisor, so a key is registered once.
_MASKED: set[str] = set()


def _mask_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _mask(secret: str) -> None:
    digest = _mask_digest(secret)
    if digest in _MASKED:
        return
    from airflow.providers.common.compat.sdk import mask_secret

    mask_secret(secret)
    _MASKED.add(digest)


async def _amask(secret: str) -> None:
    digest = _mask_digest(secret)
    if digest in _MASKED:
        return
    from airflow_provider_kling.version_compat import AIRFLOW_V_3_3_PLUS

    if not AIRFLOW_V_3_3_PLUS:  # no async masking before 3.3
        _mask(secret)
        return
    from airflow.sdk.log import amask_secret

    await amask_secret(secret)
    _MASKED.add(digest)


async def shared_endpoint(hook: Any) -> _Endpoint:
    """The endpoint of ``hook``'s connection, read without blocking the event loop.

    Hooks on one event loop that ask for the same connection while a lookup is in flight share that
    lookup: a triggerer starting a thousand triggers reads the connection once, not a thousand times
    in one loop iteration. A lookup that starts later reads it afresh.

    :param hook: the :class:`~airflow_provider_kling.hooks.kling.KlingHook` asking.
    """
    loop = asyncio.get_running_loop()
    lookups = _ENDPOINT_LOOKUPS.setdefault(loop, {})
    conn_id = hook.kling_conn_id
    lookup = lookups.get(conn_id)
    if lookup is None:
        lookup = lookups[conn_id] = loop.create_task(_read_endpoint(hook))
        lookup.add_done_callback(partial(_forget, lookups, conn_id))
    # shield: one waiter being cancelled must not cancel the lookup the others wait on.
    return await asyncio.shield(lookup)


async def _read_endpoint(hook: Any) -> _Endpoint:
    from airflow_provider_kling.version_compat import AIRFLOW_V_3_1_PLUS

    if AIRFLOW_V_3_1_PLUS:
        conn = await hook.aget_connection(hook.kling_conn_id)
    else:  # no async connection lookup before 3.1
        from asgiref.sync import sync_to_async

        conn = await sync_to_async(hook.get_connection)(hook.kling_conn_id)
    endpoint = endpoint_from_connection(conn)
    await _amask(endpoint.api_key)
    return endpoint


def _user_agent() -> str:
    from airflow_provider_kling import __version__

    return f"airflow-provider-kling/{__version__}"


__all__ = [
    "ALLOW_LOOPBACK_DOWNLOADS",
    "DEFAULT_BASE_URL",
    "GENERATION_PATH",
    "INPUT_STAGING",
    "endpoint_choice",
    "endpoint_from_connection",
    "input_staging",
]
