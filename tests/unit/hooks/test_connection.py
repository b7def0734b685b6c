"""The ``kling`` connection: endpoint resolution, test_connection, the UI form and provider registration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import airflow
import jsonschema
import pytest

from airflow_provider_kling import __version__, get_provider_info
from airflow_provider_kling.exceptions import KlingConfigError, KlingError
from airflow_provider_kling.hooks.kling import DEFAULT_BASE_URL, KlingHook
from tests.support.connections import API_KEY, closed_port, use_connection
from tests.support.hooks import MODEL, REQUEST

#: Every extra the hook reads from a ``kling`` connection: the form offers each.
EXTRAS = {
    "endpoint",
    "input_staging",
    "daily_usd_cap",
    "prices",
    "reconcile_window_seconds",
    "reconcile_poll_seconds",
    "allow_loopback_downloads",
}


def endpoint_of(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> str:
    """Resolve the base URL of a connection with these fields (nothing is sent)."""
    use_connection(monkeypatch, "kling_resolve", **fields)
    return KlingHook("kling_resolve").endpoint.base_url


# ----------------------------------------------------------------------------- endpoint resolution
@pytest.mark.parametrize(
    ("fields", "base_url"),
    [
        pytest.param({}, DEFAULT_BASE_URL, id="no-host"),
        pytest.param({"host": ""}, DEFAULT_BASE_URL, id="empty-host"),
        pytest.param({"host": "   "}, DEFAULT_BASE_URL, id="blank-host"),
        pytest.param({"host": "api.example.com"}, "https://api.example.com", id="bare-host-is-https"),
        pytest.param({"host": "https://api.example.com/"}, "https://api.example.com", id="trailing-slash"),
        pytest.param(
            {"host": "https://api.example.com/proxy/"}, "https://api.example.com/proxy", id="path-prefix"
        ),
        pytest.param({"host": "http://127.0.0.1:8642"}, "http://127.0.0.1:8642", id="http-loopback"),
        pytest.param({"host": "http://localhost:8642"}, "http://localhost:8642", id="http-localhost"),
        pytest.param({"host": "http://[::1]:8642"}, "http://[::1]:8642", id="http-ipv6-loopback"),
        pytest.param(
            {"host": "127.0.0.1", "port": 8642, "schema": "http"}, "http://127.0.0.1:8642", id="split-fields"
        ),
        pytest.param(
            {"host": "api.example.com", "port": 8443}, "https://api.example.com:8443", id="port-field"
        ),
    ],
)
def test_endpoint_resolution(monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], base_url: str) -> None:
    assert endpoint_of(monkeypatch, password=API_KEY, **fields) == base_url


@pytest.mark.parametrize(
    "host",
    ["http://api.example.com", "http://10.1.2.3:8080", "api.example.com", "http://localhost.example.com"],
)
def test_plain_http_to_a_remote_host_is_refused(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    fields: dict[str, Any] = {"host": host, "password": API_KEY}
    if "://" not in host:
        fields["schema"] = "http"  # the same mistake made through the schema field
    with pytest.raises(KlingConfigError) as info:
        endpoint_of(monkeypatch, **fields)
    text = str(info.value)
    assert "'kling_resolve'" in text
    assert host.split("://")[-1] in text
    assert "https" in text
    assert API_KEY not in text


@pytest.mark.parametrize("host", ["ftp://api.example.com", "https://", "s3://bucket"])
def test_host_that_is_not_an_http_url_is_refused(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    with pytest.raises(KlingConfigError, match=r"is not an http\(s\) URL"):
        endpoint_of(monkeypatch, host=host, password=API_KEY)


@pytest.mark.parametrize("password", [None, "", "   "], ids=["none", "empty", "blank"])
def test_missing_api_key(emulator: Any, monkeypatch: pytest.MonkeyPatch, password: str | None) -> None:
    fields: dict[str, Any] = {"host": emulator.base_url}
    if password is not None:
        fields["password"] = password
    with pytest.raises(KlingConfigError) as info:
        endpoint_of(monkeypatch, **fields)
    assert "has no API key" in str(info.value)
    assert "'API Key'" in str(info.value)

    ok, message = KlingHook("kling_resolve").test_connection()
    assert not ok
    assert "'API Key'" in message
    assert emulator.requests == []


def test_default_connection_from_json_env_var(emulator: Any) -> None:
    # The emulator fixture defines kling_default exactly as a user would, as JSON.
    conn = json.loads(os.environ["AIRFLOW_CONN_KLING_DEFAULT"])
    assert conn == {
        "conn_type": "kling",
        "host": emulator.base_url,
        "password": API_KEY,
        "extra": {"allow_loopback_downloads": True},
    }

    hook = KlingHook()
    assert hook.kling_conn_id == "kling_default"
    assert hook.endpoint.base_url == emulator.base_url
    assert hook.test_connection() == (True, f"Connected to {emulator.base_url}: the API key was accepted")


def test_uri_env_var(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """URI-style connections: a bare host means https, like any other host without a scheme.

    So ``kling://:KEY@127.0.0.1:PORT`` resolves to ``https://127.0.0.1:PORT``, which a plain-http
    emulator cannot answer; plain http to a loopback host is asked for with the schema as the URI path
    (``kling://:KEY@127.0.0.1:PORT/http``) or with the full URL encoded as the host.
    """
    port = emulator.base_url.rsplit(":", 1)[1]

    monkeypatch.setenv("AIRFLOW_CONN_KLING_URI", f"kling://:{API_KEY}@127.0.0.1:{port}")
    hook = KlingHook("kling_uri")
    assert hook.endpoint.base_url == f"https://127.0.0.1:{port}"
    ok, message = hook.test_connection()
    assert not ok
    # No scheme means https; the emulator speaks http, so the handshake fails and nothing is sent.
    assert message.startswith(f"Could not reach the Kling API: TLS handshake with 127.0.0.1:{port} failed")
    assert f"assumed https:// for host '127.0.0.1:{port}'" in message
    assert f"for a local emulator use http://127.0.0.1:{port}" in message
    assert API_KEY not in message

    monkeypatch.setenv("AIRFLOW_CONN_KLING_URI", f"kling://:{API_KEY}@127.0.0.1:{port}/http")
    hook = KlingHook("kling_uri")
    assert hook.endpoint.base_url == emulator.base_url
    assert hook.test_connection()[0]

    monkeypatch.setenv("AIRFLOW_CONN_KLING_URI", f"kling://:{API_KEY}@http%3A%2F%2F127.0.0.1%3A{port}")
    hook = KlingHook("kling_uri")
    assert hook.endpoint.base_url == emulator.base_url
    assert hook.test_connection()[0]

    monkeypatch.setenv("AIRFLOW_CONN_KLING_URI", f"kling://:{API_KEY}@api.example.com/http")
    with pytest.raises(KlingConfigError, match="plain http"):
        KlingHook("kling_uri").endpoint  # noqa: B018

    # Only the two good tries reached the emulator as API calls, each with the key accepted.
    assert [(r.method, r.auth_ok) for r in emulator.requests] == [("GET", True), ("GET", True)]


# ----------------------------------------------------------------------------- test_connection
def test_test_connection_success(emulator: Any) -> None:
    ok, message = KlingHook().test_connection()

    assert ok
    assert message == f"Connected to {emulator.base_url}: the API key was accepted"
    (probe,) = emulator.requests
    assert (probe.method, probe.auth_ok, probe.status) == ("GET", True, 404)


def test_test_connection_wrong_key(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, "kling_wrong_key", host=emulator.base_url, password="wrong-key-123")

    ok, message = KlingHook("kling_wrong_key").test_connection()

    assert not ok
    assert message == f"The API key was refused by {emulator.base_url}: Invalid API key"
    assert "wrong-key-123" not in message
    assert emulator.count("GET") == 1  # a refused key is not retried


def test_test_connection_closed_port(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    use_connection(monkeypatch, "kling_closed", host=f"http://127.0.0.1:{port}", password=API_KEY)

    ok, message = KlingHook("kling_closed").test_connection()

    assert not ok
    assert message.startswith(f"Could not reach the Kling API: could not reach http://127.0.0.1:{port}")
    assert "Connection refused" in message
    assert API_KEY not in message


def test_test_connection_reports_plain_http_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, "kling_plain", host="http://api.example.com", password=API_KEY)
    ok, message = KlingHook("kling_plain").test_connection()
    assert not ok
    assert "plain http" in message


# ----------------------------------------------------------------------------- UI and registration
def test_ui_field_behaviour() -> None:
    behaviour = KlingHook.get_ui_field_behaviour()

    assert sorted(behaviour["hidden_fields"]) == ["extra", "login", "port", "schema"]
    assert behaviour["relabeling"]["password"] == "API Key"
    assert "host" not in behaviour["hidden_fields"]
    assert DEFAULT_BASE_URL in behaviour["placeholders"]["host"]
    assert set(behaviour) == {"hidden_fields", "relabeling", "placeholders"}


def conn_fields() -> dict[str, Any]:
    (conn_type,) = get_provider_info()["connection-types"]
    return dict(conn_type["conn-fields"])


def test_the_form_offers_every_extra_the_hook_reads() -> None:
    # The Extra JSON field stays hidden: each extra has its own field instead.
    fields = conn_fields()
    assert set(fields) == EXTRAS
    types = {name: field["schema"]["type"] for name, field in fields.items()}
    assert types == {
        "endpoint": ["string", "null"],
        "input_staging": ["string", "null"],
        "daily_usd_cap": ["number", "null"],
        "prices": ["object", "null"],
        "reconcile_window_seconds": ["number", "null"],
        "reconcile_poll_seconds": ["number", "null"],
        "allow_loopback_downloads": ["boolean", "null"],
    }
    for name in ("daily_usd_cap", "reconcile_window_seconds", "reconcile_poll_seconds"):
        assert fields[name]["schema"]["exclusiveMinimum"] == 0
        assert "above 0" in fields[name]["description"]
    assert "emulator" in fields["allow_loopback_downloads"]["description"]
    # The dropdown labels every choice, the empty one too (the UI would show "null").
    endpoint = fields["endpoint"]["schema"]
    assert set(endpoint["values_display"]) == {"null" if v is None else v for v in endpoint["enum"]}
    assert "USD per second" in fields["prices"]["description"]
    for name, field in fields.items():
        assert field["label"], name
        assert field["description"], name
        # A field left empty is stored as null: every field may be empty.
        jsonschema.validate(None, field["schema"])


@pytest.mark.airflow32
def test_airflow_builds_the_form_from_the_provider_info() -> None:
    from airflow.providers_manager import ProvidersManager

    widgets = ProvidersManager().connection_form_widgets
    ours = {w.field_name: w.field for key, w in widgets.items() if key.startswith("extra__kling__")}
    assert set(ours) == EXTRAS
    assert ours["daily_usd_cap"]["schema"]["title"] == "Daily USD cap"
    assert ours["daily_usd_cap"]["value"] is None


@pytest.mark.airflow2
def test_airflow_2_builds_the_form_from_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 2.11 (and 3.0/3.1) ask the hook: text fields for numbers and JSON, a check box."""
    from airflow.providers_manager import ProvidersManager
    from werkzeug.datastructures import MultiDict
    from wtforms import BooleanField, Form, StringField

    widgets = ProvidersManager().connection_form_widgets
    ours = {w.field_name: w.field for key, w in widgets.items() if key.startswith("extra__kling__")}
    assert set(ours) == EXTRAS
    assert ours["allow_loopback_downloads"].field_class is BooleanField
    assert {ours[name].field_class for name in EXTRAS - {"allow_loopback_downloads"}} == {StringField}

    prices = json.dumps({MODEL: 0.098})
    # As a browser posts the form: every text input (empty ones as ""), a ticked check box.
    typed = {**dict.fromkeys(EXTRAS - {"allow_loopback_downloads"}, ""), "allow_loopback_downloads": "y"}
    typed.update(daily_usd_cap="12.5", prices=prices)
    form = type("KlingForm", (Form,), ours)(MultiDict(typed))
    assert form.validate(), form.errors
    # As Airflow 2.11 saves them: each non-empty value under its plain name.
    extra = {name: value for name, value in form.data.items() if value != ""}
    assert extra == {"daily_usd_cap": "12.5", "prices": prices, "allow_loopback_downloads": True}
    use_connection(monkeypatch, "kling_af2", password=API_KEY, allow_loopback_downloads=False, extra=extra)
    hook = KlingHook("kling_af2")
    assert hook.endpoint.daily_usd_cap == 12.5
    assert hook.endpoint.allow_loopback_downloads is True
    price = hook.price(MODEL)
    assert price is not None
    assert price.source == "connection"


# ----------------------------------------------------------------------------- extras as the form stores them
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            dict.fromkeys(EXTRAS),
            {"api": "legacy", "cap": None, "loopback": False, "window": 600.0, "poll": 10.0, "price": None},
            id="airflow3-form-left-empty",
        ),
        pytest.param(
            {
                **dict.fromkeys(EXTRAS),
                "endpoint": "unified",
                "daily_usd_cap": 12.5,
                "prices": {MODEL: 0.098},
                "reconcile_window_seconds": 30,
                "reconcile_poll_seconds": 0.5,
                "allow_loopback_downloads": True,
            },
            {"api": "unified", "cap": 12.5, "loopback": True, "window": 30.0, "poll": 0.5, "price": 0.098},
            id="airflow3-form-numbers",
        ),
        pytest.param(
            {
                "endpoint": "unified",
                "daily_usd_cap": "12.5",
                "prices": json.dumps({MODEL: 0.098}),
                "reconcile_window_seconds": "30",
                "reconcile_poll_seconds": "0.5",
                "allow_loopback_downloads": False,
            },
            {"api": "unified", "cap": 12.5, "loopback": False, "window": 30.0, "poll": 0.5, "price": 0.098},
            id="airflow2-form-text",
        ),
        pytest.param(
            {"daily_usd_cap": " 7 ", "reconcile_window_seconds": "", "allow_loopback_downloads": "TRUE"},
            {"api": "legacy", "cap": 7.0, "loopback": True, "window": 600.0, "poll": 10.0, "price": None},
            id="hand-written-text",
        ),
        pytest.param(
            {"allow_loopback_downloads": "1", "reconcile_poll_seconds": None},
            {"api": "legacy", "cap": None, "loopback": True, "window": 600.0, "poll": 10.0, "price": None},
            id="text-one-and-null",
        ),
    ],
)
def test_the_hook_reads_each_extra_as_the_form_stores_it(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], expected: dict[str, Any]
) -> None:
    use_connection(monkeypatch, "kling_form", password=API_KEY, allow_loopback_downloads=False, extra=extra)
    hook = KlingHook("kling_form")
    endpoint = hook.endpoint
    got = {
        "api": endpoint.api,
        "cap": endpoint.daily_usd_cap,
        "loopback": endpoint.allow_loopback_downloads,
        "window": endpoint.reconcile.window,
        "poll": endpoint.reconcile.poll,
        "price": None,
    }
    if expected["price"] is not None:  # from the extra alone: nothing is sent
        price = hook.price(MODEL)
        assert price is not None
        assert price.source == "connection"
        (unit,) = price.pricing["units"]
        got["price"] = unit["price"]
    assert got == expected


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        pytest.param("daily_usd_cap", "twelve", "a number of USD above 0", id="cap-text"),
        pytest.param("daily_usd_cap", 0, "a number of USD above 0", id="cap-zero"),
        pytest.param("daily_usd_cap", True, "a number of USD above 0", id="cap-bool"),
        pytest.param("allow_loopback_downloads", "yes", "must be true or false", id="loopback-yes"),
        pytest.param("allow_loopback_downloads", 2, "must be true or false", id="loopback-two"),
        pytest.param("reconcile_window_seconds", True, "a number of seconds > 0", id="window-bool"),
        pytest.param("reconcile_poll_seconds", "-1", "a number of seconds > 0", id="poll-negative-text"),
        pytest.param("prices", "{not json", "must map model ids to USD per second", id="prices-text"),
        pytest.param("prices", [0.098], "must map model ids to USD per second", id="prices-list"),
        pytest.param("endpoint", "v3", "is not one of legacy, unified", id="endpoint"),
        pytest.param("input_staging", "/tmp/in", "must be an object-storage prefix", id="staging"),
    ],
)
def test_a_bad_extra_is_refused_by_name_before_any_post(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, name: str, value: Any, allowed: str
) -> None:
    # A daily cap (when not the extra under test) makes the hook read the prices before a POST.
    extra = {"daily_usd_cap": 100, name: value}
    use_connection(monkeypatch, "kling_default", host=emulator.base_url, password=API_KEY, extra=extra)
    with pytest.raises(KlingError) as info:
        KlingHook().submit(REQUEST, client_request_id="kl:dag:task:run:-1:0042")
    message = str(info.value)
    assert name in message
    assert allowed in message
    assert repr(value) in message or name in ("prices",)
    assert API_KEY not in message
    assert emulator.count("POST") == 0


def test_hook_class_attributes() -> None:
    assert (KlingHook.conn_type, KlingHook.conn_name_attr, KlingHook.default_conn_name) == (
        "kling",
        "kling_conn_id",
        "kling_default",
    )
    assert KlingHook.hook_name == "Kling"


def test_provider_info_matches_airflow_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()

    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-kling"
    assert info["versions"] == [__version__]
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "kling"
    assert conn_type["hook-class-name"] == "airflow_provider_kling.hooks.kling.KlingHook"
    # Every module the provider advertises imports.
    import importlib

    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for link in info["extra-links"]:
        module, _, name = link.rpartition(".")
        assert hasattr(importlib.import_module(module), name)


def test_provider_info_schema_rejects_a_broken_entry() -> None:
    # Guard against validating against a schema that accepts anything.
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    broken = {**get_provider_info(), "connection-types": [{"connection-type": "kling"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.fixture(scope="module")
def providers_cli() -> dict[str, Any]:
    """``airflow providers list`` and ``airflow providers hooks`` as JSON, run side by side."""
    commands = {"list": ["providers", "list", "-o", "json"], "hooks": ["providers", "hooks", "-o", "json"]}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
            text=True,
        )
        for name, args in commands.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr
        out[name] = json.loads(stdout)
    return out


@pytest.mark.airflow31  # 3.0 prints INFO log lines on stdout ahead of the JSON
def test_airflow_providers_list_shows_the_provider(providers_cli: dict[str, Any]) -> None:
    rows = [row for row in providers_cli["list"] if row["package_name"] == "airflow-provider-kling"]
    assert rows == [
        {
            "package_name": "airflow-provider-kling",
            "description": get_provider_info()["description"].rstrip("."),
            "version": __version__,
        }
    ]


@pytest.mark.airflow31  # 3.0 prints INFO log lines on stdout ahead of the JSON
def test_airflow_providers_hooks_shows_the_connection_type(providers_cli: dict[str, Any]) -> None:
    rows = [row for row in providers_cli["hooks"] if row["connection_type"] == "kling"]
    assert rows == [
        {
            "connection_type": "kling",
            "class": "airflow_provider_kling.hooks.kling.KlingHook",
            "conn_id_attribute_name": "kling_conn_id",
            "package_name": "airflow-provider-kling",
            "hook_name": "Kling",
        }
    ]
