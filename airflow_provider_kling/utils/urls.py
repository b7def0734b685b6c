"""URL parsing, the host and address policy, and redaction of signed URLs in logs.

Shared by the hook (the connection's base URL, every video URL and redirect hop) and anything else
that must refuse an ambiguous or non-public URL before connecting. No HTTP client is imported here.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import unicodedata
from urllib.parse import urlsplit

from airflow_provider_kling.exceptions import (
    KlingConfigError,
    KlingConnectionError,
    KlingDownloadError,
    redact_urls,
)

#: Hosts spelled as numbers in a form other than dotted-quad IPv4 (2130706433, 0177.0.0.1, 0x7f.1):
#: libc reads them as addresses, ``ipaddress`` does not; refused rather than guessed.
_NUMERIC_HOST_RE = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*$", re.IGNORECASE)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and for addresses ``ipaddress`` itself parses as loopback (strictly)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_problem(text: str) -> str | None:
    """Why a host (or URL) cannot be used as written, or None."""
    if "\\" in text:
        return "it contains a backslash"
    if any(ch.isspace() for ch in text):
        return "it contains whitespace"
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        return "it contains control characters"
    return None


def netloc(hostname: str, port: int | None) -> str:
    """``hostname[:port]``, with an IPv6 address in brackets."""
    host = f"[{hostname}]" if ":" in hostname else hostname
    return f"{host}:{port}" if port else host


_USERINFO_RE = re.compile(r"(^[^:/?#]*://)[^/?#]*@")


def split_http_url(url: str, what: str) -> tuple[str, str, int | None, str]:
    """(scheme, hostname, port, path) of an http(s) URL, refusing every ambiguous spelling.

    :raises ValueError: with a readable reason.
    """
    shown = _USERINFO_RE.sub(r"\1***@", url)  # user information may hold a password: never shown
    problem = host_problem(url)
    if problem:
        raise ValueError(f"{what} {shown!r} cannot be used: {problem}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {shown!r} is not an http(s) URL")
    if "@" in parts.netloc:
        raise ValueError(f"{what} {shown!r} cannot be used: it carries user information (user@host)")
    url = shown
    hostname = parts.hostname
    if hostname.endswith("."):
        raise ValueError(f"{what} {url!r} cannot be used: its host name ends in a dot")
    if _NUMERIC_HOST_RE.match(hostname):
        try:
            ipaddress.IPv4Address(hostname)
        except ValueError:
            raise ValueError(
                f"{what} {url!r} cannot be used: {hostname!r} is a number that is not a dotted-quad "
                "IPv4 address (write the address as four decimal numbers, e.g. 127.0.0.1)"
            ) from None
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} {url!r} cannot be used: its port is not a number from 1 to 65535") from None
    return scheme, hostname, port, parts.path


class _RedactQueries(logging.Filter):
    """Redacts URL query strings in urllib3's own debug lines (``"GET /v.mp4?X-Amz-Signature=..."``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "?" in a for a in record.args):
            record.args = tuple(
                redact_query(a) if isinstance(a, str) and "?" in a else a for a in record.args
            )
        elif isinstance(record.msg, str) and "?" in record.msg and not record.args:
            record.msg = redact_urls(record.msg)
        return True


def install_log_redaction() -> None:
    """Add the query-redacting filter to urllib3's connection-pool logger (once; later calls do nothing)."""
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactQueries) for f in logger.filters):
        logger.addFilter(_RedactQueries())


def redact_query(url: str) -> str:
    """Video URLs are signed: keep the signature out of logs and errors."""
    base, sep, _ = url.partition("?")
    return f"{base}?<redacted>" if sep else base


def netloc_of(url: str) -> str:
    """The ``host[:port]`` part of ``url`` (for messages).

    :param url: any URL.
    """
    return urlsplit(url).netloc


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unmapped(address: _Address) -> _Address:
    """An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) as the IPv4 address it stands for."""
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def _parsed_address(text: str) -> _Address:
    """An address as ``getaddrinfo`` or ``getpeername`` gives it (an IPv6 zone ``%eth0`` dropped)."""
    return ipaddress.ip_address(str(text).split("%", 1)[0])


def forbidden_address_kind(address: _Address, allow_loopback: bool) -> str | None:
    address = _unmapped(address)
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    for kind in ("private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:
        return "not public"
    return None


def check_download_url(url: str, *, allow_loopback: bool = False) -> None:
    """Refuse a video URL (or redirect hop) the download policy does not allow, before connecting.

    The host is resolved and every address it resolves to must be public: a private, loopback,
    link-local, multicast, reserved or unspecified address is refused. Only https is allowed, except
    plain http to a loopback host when ``allow_loopback`` is set (the emulator). The same rule is
    checked again on the address the connection actually reaches (:func:`check_download_peer`), so a
    DNS answer that changes in between is refused too.

    :raises KlingDownloadError: naming the URL without its (signed) query string.
    """
    shown = redact_query(url)
    try:
        scheme, hostname, port, _ = split_http_url(url, "video URL")
    except ValueError as exc:
        raise KlingDownloadError(
            f"refusing to download from {shown!r}: {redact_urls(str(exc))}; only http(s) URLs are followed"
        ) from None
    try:
        infos = socket.getaddrinfo(
            hostname, port or (443 if scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise KlingConnectionError(
            f"video download failed: cannot resolve {hostname!r}: {exc}", nothing_sent=True
        ) from None
    _refuse_download_addresses(url, {str(info[4][0]) for info in infos}, allow_loopback)


def check_download_peer(url: str, address: str, *, allow_loopback: bool = False) -> None:
    """Refuse the address a video download's connection reached if the download policy does not allow it.

    Called with the connected socket's peer address before any byte of the request is sent: the
    policy of :func:`check_download_url`, on the address connected to rather than on a lookup made
    earlier (which DNS may have answered differently).

    :param url: the video URL (or redirect hop) being fetched.
    :param address: the peer address of the connection (``getpeername()[0]``).
    :param allow_loopback: let loopback addresses through (the emulator).
    :raises KlingDownloadError: naming the URL without its (signed) query string.
    """
    _refuse_download_addresses(url, {address}, allow_loopback)


def _refuse_download_addresses(url: str, texts: set[str], allow_loopback: bool) -> None:
    """The download policy on the addresses of ``url``'s host (resolved, or connected to)."""
    shown = redact_query(url)
    scheme, hostname, _, _ = split_http_url(url, "video URL")
    addresses = {_parsed_address(text) for text in texts}
    for address in sorted(addresses, key=str):
        kind = forbidden_address_kind(address, allow_loopback)
        if kind:
            hint = (
                " (set the connection extra allow_loopback_downloads for a local emulator)"
                if kind == "loopback"
                else ""
            )
            raise KlingDownloadError(
                f"refusing to download from {shown!r}: {hostname} resolves to {address}, a {kind} "
                f"address; videos are fetched only from public addresses{hint}"
            )
    if scheme == "http" and not (allow_loopback and all(a.is_loopback for a in addresses)):
        raise KlingDownloadError(
            f"refusing to download from {shown!r}: plain http; videos are fetched over https only "
            "(plain http only to loopback hosts, with the connection extra allow_loopback_downloads)"
        )


def check_api_peer(base_url: str, address: str) -> None:
    """Refuse plain http to the API unless the address the connection reached is loopback.

    The connection's host is checked by name when it is read (plain http only to 127.0.0.1,
    localhost or ::1); this is the same rule on the address actually connected to, so a
    ``localhost`` that resolves elsewhere never receives the API key in clear. https is not limited.

    :param base_url: the connection's base URL.
    :param address: the peer address of the connection (``getpeername()[0]``, or a resolved one).
    :raises KlingConfigError: plain http and a non-loopback address.
    """
    scheme, hostname, _, _ = split_http_url(base_url, "host")
    if scheme == "http" and not _parsed_address(address).is_loopback:
        raise KlingConfigError(
            f"host {base_url!r} uses plain http, but {hostname} resolves to {address}, which is not a "
            "loopback address; only https is allowed except to a loopback host (127.0.0.1, localhost, "
            "::1), so the API key never crosses a network in clear"
        )


__all__ = [
    "check_api_peer",
    "check_download_peer",
    "check_download_url",
    "forbidden_address_kind",
    "host_problem",
    "install_log_redaction",
    "is_loopback",
    "netloc",
    "netloc_of",
    "redact_query",
    "split_http_url",
]
