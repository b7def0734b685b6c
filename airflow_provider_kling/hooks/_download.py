"""Redirect-checked streaming download of a video to a local path or an object store.

Every URL and redirect hop passes the download policy of :mod:`airflow_provider_kling.utils.urls`
before any connection, and again on the address each connection reaches (:mod:`._peer`). The
bytes land at the target only when their count is right (a local file through a temporary name
beside it, an object through an uncommitted upload: see
:func:`airflow_provider_kling.utils.storage.write_whole`). It lives with the hook, not in ``utils``:
it runs on the hook's requests session and shares the sync transport's wall-clock body reader and
error translation.
"""

from __future__ import annotations

import functools
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from airflow_provider_kling.exceptions import KlingConnectionError, KlingDownloadError
from airflow_provider_kling.hooks._connection import _NoAuth
from airflow_provider_kling.hooks._errors import _connection_error, _tls_error
from airflow_provider_kling.hooks._peer import checking_peer
from airflow_provider_kling.hooks._transport import _CallTimedOut, _iter_body
from airflow_provider_kling.utils.storage import safe_file_name, write_whole
from airflow_provider_kling.utils.urls import check_download_peer, check_download_url, netloc_of, redact_query

#: Default wall-clock bound of one video download try, headers to last byte.
DOWNLOAD_TIMEOUT = 3600.0
_MAX_REDIRECTS = 5


def _name_from_url(url: str) -> str:
    tail = urlsplit(url).path.rsplit("/", 1)[-1]
    return safe_file_name(tail or "video.mp4")


def open_following_redirects(
    session: requests.Session, url: str, allow_loopback: bool, budget: float, timeout: tuple[float, float]
) -> requests.Response:
    """Open ``url`` for streaming, checking the URL and every redirect hop against the download policy.

    Each hop is checked before connecting and on the address its connection reached (the session
    must carry :class:`~airflow_provider_kling.hooks._peer.PeerCheckingAdapter`, as the hook's does).

    :param session: the hook's requests.Session (no credentials are sent).
    :param url: the video URL.
    :param allow_loopback: let loopback hosts through (the emulator).
    :param budget: wall-clock seconds of the try; each timeout is cut to it.
    :param timeout: the hook's (connect, read) timeouts.
    """
    for _ in range(_MAX_REDIRECTS + 1):
        check_download_url(url, allow_loopback=allow_loopback)
        try:
            with checking_peer(functools.partial(check_download_peer, url, allow_loopback=allow_loopback)):
                resp = session.get(
                    url,
                    stream=True,
                    timeout=(min(timeout[0], budget), min(timeout[1], budget)),
                    allow_redirects=False,
                    auth=_NoAuth(),
                    headers={"Accept-Encoding": "identity"},
                )
        except requests.exceptions.SSLError as exc:
            raise _tls_error(exc, None, netloc_of(url)) from None
        except requests.exceptions.RequestException as exc:
            raise _connection_error(exc, "video download failed", nothing_sent=True) from None
        if resp.is_redirect:
            location = resp.headers.get("Location", "")
            resp.close()
            url = urljoin(url, location)
            continue
        if resp.status_code >= 400:
            resp.close()
            error: type[Exception] = KlingConnectionError if resp.status_code >= 500 else KlingDownloadError
            raise error(f"video download from {redact_query(url)} answered {resp.status_code}")
        return resp
    raise KlingDownloadError(f"more than {_MAX_REDIRECTS} redirects downloading the video")


def download_once(
    session: requests.Session,
    url: str,
    target: Any,
    expected_size: int | None,
    allow_loopback: bool,
    budget: float,
    timeout: tuple[float, float],
    *,
    overwrite: bool = True,
) -> int:
    """One try: stream ``url`` to ``target``, kept only when its size is right (else nothing is left).

    :param session: the hook's requests.Session.
    :param url: the video URL.
    :param target: the local Path or ObjectStoragePath to write.
    :param expected_size: the size the API announced, or None.
    :param allow_loopback: let loopback hosts through (the emulator).
    :param budget: wall-clock seconds of the try, headers to last byte.
    :param timeout: the hook's (connect, read) timeouts.
    :param overwrite: replace a file that appeared meanwhile.
    :return: the bytes written.
    """
    started = time.monotonic()
    resp = open_following_redirects(session, url, allow_loopback, budget, timeout)
    # A server that encodes anyway (we asked for identity): the decoded size is the file's size.
    encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
    announced = None if encoded else resp.headers.get("Content-Length")
    written = 0
    with resp, write_whole(target, overwrite=overwrite) as out:
        try:
            for chunk in _iter_body(resp, started + budget):
                out.write(chunk)
                written += len(chunk)
        except _CallTimedOut:
            raise KlingConnectionError(
                f"video download took longer than {budget:.0f} s (after {written} bytes)"
            ) from None
        except (OSError, requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise _connection_error(exc, "video download dropped", nothing_sent=True) from None
        if announced is not None and announced.isdigit() and written != int(announced):
            raise KlingConnectionError(
                f"video download ended after {written} of {announced} bytes (Content-Length)"
            )
        if expected_size is not None and written != expected_size:
            raise KlingDownloadError(
                f"video is {written} bytes but the API announced file_size {expected_size}; not kept"
            )
    return written


__all__ = ["DOWNLOAD_TIMEOUT", "download_once", "open_following_redirects"]


def download(
    session: requests.Session,
    url: str,
    target: Any,
    *,
    expected_size: int | None,
    allow_loopback: bool,
    timeout: float,
    read_timeout: tuple[float, float],
    overwrite: bool,
    attempts: int,
    wait: Any,
    log: Any,
) -> int:
    """:func:`download_once`, tried again on network errors that may pass (``attempts`` in all).

    :param session: the hook's requests session.
    :param url: the video URL.
    :param target: the local path or ObjectStoragePath to write.
    :param expected_size: the size the API announced, or None.
    :param allow_loopback: the connection allows loopback hosts (the emulator).
    :param timeout: wall-clock bound of one try, in seconds.
    :param read_timeout: the hook's (connect, read) timeouts.
    :param overwrite: replace an existing file.
    :param attempts: tries in all.
    :param wait: tenacity's wait between tries.
    :param log: where retries are said.
    :return: the bytes written.
    """
    retry = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, KlingConnectionError) and e.retryable),
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait,
        reraise=True,
        before_sleep=lambda s: log.warning(
            "Download of %s failed (attempt %s): %s; retrying",
            target,
            s.attempt_number,
            s.outcome.exception() if s.outcome else None,
        ),
    )
    written = 0
    for attempt in retry:
        with attempt:
            written = download_once(
                session,
                url,
                target,
                expected_size,
                allow_loopback,
                timeout,
                read_timeout,
                overwrite=overwrite,
            )
    return written
