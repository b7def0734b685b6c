"""The test API key, and ``kling`` connections for tests: as AIRFLOW_CONN_ JSON, set, or per test."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest

#: The key every test uses; recognisable so leak checks can search for it.
API_KEY = "kling-test-key-7f3a9c"
#: Emulator lifecycle for tests: short, so the suite stays fast.
GENERATION_SECONDS = 0.6


#: The connection extra that lets the hook download videos from loopback hosts (the emulator).
LOOPBACK_DOWNLOADS = {"allow_loopback_downloads": True}


def connection_json(*, allow_loopback_downloads: bool = True, **fields: object) -> str:
    """A ``kling`` connection as the JSON of an AIRFLOW_CONN_ variable.

    Test connections point at the emulator on 127.0.0.1, whose videos are served over plain http
    from loopback: the download policy refuses that unless the connection allows it, as here.
    """
    extra = dict(fields.pop("extra", None) or {})  # type: ignore[call-overload]
    if allow_loopback_downloads:
        extra = {**LOOPBACK_DOWNLOADS, **extra}
    if extra:
        fields["extra"] = extra
    return json.dumps({"conn_type": "kling", **fields})


def set_connection(conn_id: str, *, allow_loopback_downloads: bool = True, **fields: object) -> None:
    """Define an Airflow connection through its AIRFLOW_CONN_ environment variable."""
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = connection_json(
        allow_loopback_downloads=allow_loopback_downloads, **fields
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def use_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    """Define a connection for this test only (loopback downloads allowed unless told otherwise)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(**fields))
