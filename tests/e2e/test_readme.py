"""The README's claims, checked by running its snippets and commands.

Snippets are taken from README.md by fenced code block, so editing the README re-runs (or breaks)
these tests. CLI commands run in a private AIRFLOW_HOME with its own SQLite DB; DAG snippets run with
``dag.test(logical_date=None)``, as a run triggered by hand on Airflow 3 (no logical date), against
the emulator.

``python -m tests.e2e.test_readme`` rewrites the README's model table from the catalog.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.connections import API_KEY

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TABLE_START = "<!-- model-table:start -->\n"
TABLE_END = "<!-- model-table:end -->"
BIN = Path(sys.executable).parent
#: What the README's placeholders become in the tests.
TEST_KEY = "readme-test-key-5e1d"


# ------------------------------------------------------------------------------ README helpers
def code_blocks(lang: str) -> list[str]:
    """Every fenced code block of README.md in language ``lang``, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def block_with(text: str, lang: str) -> str:
    """The one ``lang`` block of README.md containing ``text``."""
    found = [b for b in code_blocks(lang) if text in b]
    assert len(found) == 1, f"README.md should have exactly one {lang} block with {text!r}: {len(found)}"
    return found[0]


def command_lines(block: str) -> list[str]:
    """The block's commands: its lines without comments and blank lines."""
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def readme_table() -> str:
    text = README.read_text()
    assert text.count(TABLE_START) == 1, "model-table start marker missing or repeated"
    assert text.count(TABLE_END) == 1, "model-table end marker missing or repeated"
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]


def write_readme_table() -> None:
    """Put the catalog's current table between the markers."""
    from airflow_provider_kling.catalog import model_table_markdown

    text = README.read_text()
    head, rest = text.split(TABLE_START, 1)
    README.write_text(head + TABLE_START + model_table_markdown() + TABLE_END + rest.split(TABLE_END, 1)[1])


# ------------------------------------------------------------------------------ a private Airflow
@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a fresh AIRFLOW_HOME (migrated SQLite DB, own DAG folder, no connections)."""
    home = tmp_path_factory.mktemp("readme-airflow-home")
    (home / "dags").mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__CORE__TEST_CONNECTION"))
        and k != "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    migrated = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    return env


def sh(command: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with bash, as a user pasting it would."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def airflow_json(args: str, env: dict[str, str]) -> Any:
    done = sh(f"airflow {args} -o json", env)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout[done.stdout.index("[") :])


# ------------------------------------------------------------------------------ generated docs
def test_model_table_is_the_catalogs():
    from airflow_provider_kling.catalog import current_models, model_table_markdown

    assert readme_table() == model_table_markdown(), (
        "README.md's model table differs from the catalog: run `.venv/bin/python -m tests.e2e.test_readme`"
    )
    rows = [line for line in readme_table().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == current_models()


def test_model_table_shows_each_models_limits():
    from airflow_provider_kling.catalog import model_table_markdown

    rows = {
        line.split("`")[1]: line for line in model_table_markdown().splitlines() if line.startswith("| `")
    }
    assert "duration 3..15 s" in rows["klingai/video-v3-pro-image-to-video"]
    assert "duration 5 or 10 s" in rows["kling-video/v1/standard/image-to-video"]
    assert "KlingTextToVideoOperator" in rows["klingai/v2.5-turbo/pro/text-to-video"]
    assert "`image_url`, `audio_url`" in rows["klingai/avatar-pro"]
    assert "audio mp3/wav/m4a/aac <= 5 MB" in rows["klingai/avatar-pro"]
    assert "a tail image needs generate_audio=false" in rows["klingai/video-v3-omni-1080p-image-to-video"]
    assert "kling-video/v1.5/standard/text-to-video" not in rows  # retired: listed below the table
    assert "`kling-video/v1.5/standard/text-to-video`" in model_table_markdown().split("Retired")[1]


def test_xcom_keys_are_documented_once_and_match_the_operators():
    from airflow_provider_kling.operators.kling import RESULT_KEYS

    text = README.read_text()
    table = text.split("| key | value |\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split("`")[1] for line in table.splitlines()] == list(RESULT_KEYS)
    assert text.count("| key | value |") == 1


# ------------------------------------------------------------------------------ the connection
#: Reads kling_default back from the private metadata DB (as Airflow resolves it), then deletes it.
_READ_AND_DELETE = """
import json
from airflow.models.connection import Connection
from airflow.utils.session import create_session

with create_session() as session:
    conn = session.query(Connection).filter_by(conn_id="kling_default").one()
    print(json.dumps({"conn_type": conn.conn_type, "host": conn.host, "password": conn.password,
                      "extra": conn.extra_dejson}))
    session.delete(conn)
"""


def test_connections_add_defines_the_same_connection_as_the_env_var(cli_env):
    """Each ``airflow connections add`` line stores what the ``export`` line above it defines."""
    lines = command_lines(block_with("airflow connections add", "bash"))
    exports = [line for line in lines if line.startswith("export AIRFLOW_CONN_KLING_DEFAULT=")]
    adds = [line for line in lines if line.startswith("airflow connections add kling_default ")]
    assert len(exports) == len(adds) == 3
    for export, add in zip(exports, adds, strict=True):
        export, add = (line.replace("<your Apilaplas key>", TEST_KEY) for line in (export, add))
        expected = json.loads(shlex.split(export.split("=", 1)[1])[0])
        done = sh(add, cli_env)
        assert done.returncode == 0, done.stdout + done.stderr
        read = subprocess.run(
            [sys.executable, "-c", _READ_AND_DELETE], env=cli_env, capture_output=True, text=True, timeout=300
        )
        assert read.returncode == 0, read.stdout + read.stderr
        stored = json.loads(read.stdout.strip().splitlines()[-1])
        assert stored["conn_type"] == expected["conn_type"] == "kling"
        assert stored["password"] == expected["password"]
        assert (stored["host"] or None) == expected.get("host")
        assert stored["extra"] == expected.get("extra", {})


@pytest.mark.airflow3  # the README's commands and answers are Airflow 3's
@pytest.mark.airflow33  # 3.3's connection test endpoint answer
def test_connections_test_cli_succeeds_against_the_emulator(emulator, cli_env):
    """The README's ``airflow connections test`` block, with the connection from the env var."""
    block = block_with("airflow connections test kling_default", "bash")
    assert "export AIRFLOW__CORE__TEST_CONNECTION=Enabled" in block
    env = {**cli_env, "AIRFLOW_CONN_KLING_DEFAULT": os.environ["AIRFLOW_CONN_KLING_DEFAULT"]}
    done = sh(block, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Connection success!" in done.stdout
    probes = [r for r in emulator.requests if r.method == "GET" and r.endpoint == "legacy"]
    assert len(probes) == 1
    assert probes[0].auth_ok

    # Without [core] test_connection = Enabled, Airflow refuses to test at all.
    disabled = sh("\n".join(command_lines(block)[1:]), env)
    assert disabled.returncode == 1
    assert "Testing connections is disabled" in disabled.stdout

    # A refused key: the CLI fails and says which host refused it.
    wrong = json.loads(env["AIRFLOW_CONN_KLING_DEFAULT"]) | {"password": "not-the-key"}
    refused = sh(block, {**env, "AIRFLOW_CONN_KLING_DEFAULT": json.dumps(wrong)})
    assert refused.returncode == 1
    assert "Connection failed!" in refused.stdout
    assert emulator.base_url in refused.stdout


_API_PROBE = """
import json, os, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app

client = TestClient(create_app())
stored = client.get("/api/v2/connections/kling_default").json()
# What the Test icon of the connection list posts (Airflow 3.3.2's UI: the port as Number(port)).
body = {
    "connection_id": stored["connection_id"], "conn_type": stored["conn_type"],
    "description": stored["description"] or "", "extra": stored["extra"] or "{}",
    "host": stored["host"] or "", "login": stored["login"] or "", "password": stored["password"] or "",
    "port": 0 if stored["port"] is None else stored["port"], "schema": stored["schema"] or "",
}
icon = client.post("/api/v2/connections/test", json=body)
without_port = client.post("/api/v2/connections/test", json={k: v for k, v in body.items() if k != "port"})
print(json.dumps({"password": stored["password"], "icon": [icon.status_code, icon.json()],
                  "without_port": [without_port.status_code, without_port.json()]}))
"""


@pytest.mark.airflow3
@pytest.mark.airflow32  # the connection test endpoint's answer of 3.2+
def test_airflow_332s_test_endpoint_refuses_the_connection_lists_test_icon(emulator, cli_env):
    """README: the Test icon's request is refused by Airflow's own endpoint; the hook itself is fine."""
    import airflow

    env = {
        **cli_env,
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    add = sh(
        f"airflow connections add kling_default --conn-type kling --conn-host {emulator.base_url} "
        f"--conn-password {API_KEY}",
        env,
    )
    assert add.returncode == 0, add.stdout + add.stderr
    try:
        done = subprocess.run(
            [sys.executable, "-c", _API_PROBE], env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        sh("airflow connections delete kling_default", env)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["password"] == "***"  # the list never holds the key
    if airflow.__version__ == "3.3.2":
        status, answer = seen["icon"]
        assert status == 400
        assert "differs from the stored connection" in answer["detail"]
        assert "differs from the stored connection" in README.read_text().replace("\n", " ")
    # The same request without the bogus port reaches the hook, which accepts the key.
    assert seen["without_port"] == [
        200,
        {"status": True, "message": f"Connected to {emulator.base_url}: the API key was accepted"},
    ]


# ------------------------------------------------------------------------------ pools
@pytest.mark.airflow3  # the README's commands and answers are Airflow 3's
@pytest.mark.airflow33  # 3.3's CLI (airflow.dag_processing.dagbag)
def test_pool_commands_create_the_pool_the_pipeline_example_uses(cli_env):
    from tests.support.dags import EXAMPLES, load_dag_file

    pool = load_dag_file(EXAMPLES / "example_kling_pipeline.py").POOL
    commands = {line for b in code_blocks("bash") for line in command_lines(b) if "airflow pools set" in line}
    assert commands, "README.md shows no `airflow pools set` command"
    for command in sorted(commands):
        done = sh(command, cli_env)
        assert done.returncode == 0, done.stdout + done.stderr
        (created,) = [p for p in airflow_json("pools list", cli_env) if p["pool"] == pool]
        assert int(created["slots"]) == 2
        assert str(created["include_deferred"]).lower() == "true"


# ------------------------------------------------------------------------------ DAG snippets
# tests.support.in_process_api gives Airflow 3.0-3.2's dag.test() the in-process API cache 3.3 has (it
# does nothing on 3.3): without it, each task of the snippet there rebuilds the execution API.
_RUN_BY_HAND = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from tests.support.in_process_api import reuse_in_process_execution_api
reuse_in_process_execution_api()
(dag,) = DagBag(dag_folder=sys.argv[1]).dags.values()
run = dag.test(logical_date=None)  # as a run triggered by hand on Airflow 3
print(json.dumps({"state": str(run.state), "run_id": run.run_id}))
"""


def run_by_hand(dag_file: Path, env: dict[str, str]) -> dict[str, Any]:
    """``dag.test(logical_date=None)`` of ``dag_file`` in the private AIRFLOW_HOME (its DAG folder)."""
    env = {**env, "AIRFLOW_CONN_KLING_DEFAULT": os.environ["AIRFLOW_CONN_KLING_DEFAULT"]}
    done = subprocess.run(
        [sys.executable, "-c", _RUN_BY_HAND, str(dag_file)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "log": done.stdout + done.stderr}


@pytest.mark.airflow3
@pytest.mark.airflow32  # the CLI of 3.2+ (airflow.dag_processing.dagbag)
def test_operator_snippet_runs_when_triggered_by_hand(emulator, cli_env, tmp_path):
    """The README's DAG runs as written in a manual run, and ``{% raw %}`` keeps literal braces."""
    snippet = block_with("KlingTextToVideoOperator(", "python")
    videos = tmp_path / "videos"
    dag_file = Path(cli_env["AIRFLOW__CORE__DAGS_FOLDER"]) / "kling_readme.py"
    # The one substitution: the download folder.
    dag_file.write_text(snippet.replace('"/data/kling/', f'"{videos}/'))
    try:
        result = run_by_hand(dag_file, cli_env)
    finally:
        dag_file.unlink()
    assert result["state"] == "success", result["log"][-5000:]

    bodies = {p.json["model"]: p.json for p in emulator.requests if p.method == "POST" and p.endpoint}
    assert bodies["klingai/v2.5-turbo/pro/text-to-video"]["prompt"] == (
        "A neon sign that reads {{ OPEN }} flickers on in the rain"
    )
    v3 = bodies["klingai/video-v3-pro-image-to-video"]
    assert v3["prompt"] == "The camera slowly circles the coffee mug on a turntable"
    assert v3["duration"] == 8
    assert v3["generate_audio"] is True
    avatar = bodies["klingai/avatar-pro"]
    assert set(avatar) == {"model", "image_url", "audio_url"}
    assert len(bodies) == 3
    # {{ run_id }} is defined in a manual run: one folder per run, three videos in it.
    assert sorted(p.parent.name for p in videos.rglob("*.mp4")) == [result["run_id"]] * 3


@pytest.mark.airflow3
@pytest.mark.airflow32  # the CLI of 3.2+ (airflow.dag_processing.dagbag)
def test_ds_is_undefined_when_triggered_by_hand(emulator, cli_env):
    """What the README warns about: ``{{ ds }}`` fails a manual run of a ``schedule=None`` DAG."""
    dag_file = Path(cli_env["AIRFLOW__CORE__DAGS_FOLDER"]) / "kling_readme_ds.py"
    dag_file.write_text(
        textwrap.dedent(
            """
            import pendulum
            from airflow.sdk import DAG
            from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

            start = pendulum.datetime(2026, 1, 1, tz="UTC")
            with DAG("kling_readme_ds", schedule=None, start_date=start) as dag:
                KlingTextToVideoOperator(task_id="t", prompt="The news of {{ ds }}")
            """
        )
    )
    try:
        result = run_by_hand(dag_file, cli_env)
    finally:
        dag_file.unlink()
    assert result["state"] == "failed"
    assert "'ds' is undefined" in result["log"]
    assert not [r for r in emulator.requests if r.method == "POST"]  # nothing was paid for
    assert "`{{ ds }}`" in README.read_text()


if __name__ == "__main__":
    write_readme_table()
    print(f"Wrote the catalog's model table into {README}")
