"""Shared fixtures: a private AIRFLOW_HOME with a SQLite metadata DB, and the Kling emulator.

The environment is set before anything imports Airflow, so no test touches ~/airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="kling-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
_ROOT = Path(__file__).resolve().parents[1]
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_ROOT / "example_dags")
# dag.test() runs only DAGs found in a bundle: the examples, and DAGs written for the tests.
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path)},
        }
        for name, path in (("kling_examples", _ROOT / "example_dags"), ("kling_tests", _ROOT / "tests" / "dags"))
    ]
)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = "http://127.0.0.1:8080/execution/"
os.environ.pop("KLING_API_KEY", None)

#: The key every test uses; recognisable so leak checks can search for it.
API_KEY = "kling-test-key-7f3a9c"
#: Emulator lifecycle for tests: short, so the suite stays fast.
GENERATION_SECONDS = 0.6


def set_connection(conn_id: str, **fields: object) -> None:
    """Define an Airflow connection through its AIRFLOW_CONN_ environment variable."""
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": "kling", **fields})


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Create the metadata DB once per session (needed by dag.test and the CLI)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return _HOME


@pytest.fixture(scope="session")
def _emulator_server() -> Iterator[object]:
    from airflow_provider_kling.emulator import KlingEmulator

    emu = KlingEmulator(api_key=API_KEY, generation_seconds=GENERATION_SECONDS)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def emulator(_emulator_server: object) -> Iterator[object]:
    """The session's emulator, reset (no requests, generations or faults) and wired to kling_default."""
    emu = _emulator_server
    emu.reset()  # type: ignore[attr-defined]
    set_connection("kling_default", host=emu.base_url, password=API_KEY)  # type: ignore[attr-defined]
    yield emu
    emu.reset()  # type: ignore[attr-defined]
