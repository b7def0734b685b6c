"""Shared fixtures: a private AIRFLOW_HOME with a SQLite metadata DB, and the Kling emulator.

The environment is set before anything imports Airflow, so no test touches ~/airflow.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.connections import API_KEY, GENERATION_SECONDS, set_connection

_HOME = Path(tempfile.mkdtemp(prefix="kling-airflow-home-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
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
        for name, path in (
            ("kling_examples", _ROOT / "example_dags"),
            ("kling_tests", _ROOT / "tests" / "dags"),
        )
    ]
)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = "http://127.0.0.1:8080/execution/"
os.environ.pop("KLING_API_KEY", None)

#: The installed Airflow's major version, read without importing Airflow.
AIRFLOW_MAJOR = int(importlib.metadata.version("apache-airflow").split(".")[0])
#: The installed Airflow's (major, minor).
AIRFLOW_MINOR = tuple(int(p) for p in importlib.metadata.version("apache-airflow").split(".")[:2])


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) the tests written for the other Airflow major: markers airflow3 / airflow2."""
    other = "airflow2" if AIRFLOW_MAJOR >= 3 else "airflow3"
    # airflow31 / airflow33: the test reads what only that minor's Airflow gives (see pyproject's
    # markers); the provider's own behaviour on the earlier minors is covered by the rest of the suite.
    floors = {"airflow31": (3, 1), "airflow32": (3, 2), "airflow33": (3, 3)}
    too_old = {name for name, minor in floors.items() if AIRFLOW_MINOR < minor}
    deselected = [
        item
        for item in items
        if item.get_closest_marker(other) or any(item.get_closest_marker(name) for name in too_old)
    ]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
    # The e2e tests share one real Airflow deployment (tests/support/deployment.py): run them last and
    # together (stable sort). Under pytest-xdist (`make test`: -n 3 --dist loadgroup) the tests that use
    # it form groups, each run in this order by one worker that starts its deployment once, while the
    # other workers take the rest of the suite (xdist hands out the largest groups first).
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
    for item in items:
        if "deployment" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(deployment_group(item)))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent under -p no:xdist
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Refuse to run when pytest-xdist's groups are lost (no node id carries its ``@group``).

    Without them every worker starts its own deployment and module fixture: the suite still passes,
    only slower, so nothing else would tell. pytest 9.2 with pytest-xdist 3.8 did this (pyproject).
    Every module listed in ``_GROUPED_MODULES`` groups its tests, so when one of them is collected,
    some id must carry a group.
    """
    if node.config.getvalue("dist") != "loadgroup" or "@" in "".join(ids):
        return
    if any(nodeid.startswith(_GROUPED_MODULES) for nodeid in ids):
        raise pytest.UsageError(
            "--dist loadgroup: the collected tests lost their xdist groups; this pytest and "
            "pytest-xdist do not work together (see the pytest pin in pyproject.toml)"
        )


#: Test modules that kill or restart a deployment's processes: under pytest-xdist they get a deployment
#: of their own, so the other deployment tests neither wait behind them nor see their restarts.
_CRASH_MODULES = ("tests/e2e/test_crash_safety.py", "tests/integration/test_batch.py")
#: Modules whose every test is in an xdist group (their pytestmark): one module fixture per suite.
_GROUPED_MODULES = ("tests/integration/test_bad_input.py", "tests/integration/test_observability.py")


def deployment_group(item: pytest.Item) -> str:
    """The xdist group of a test that uses the real deployment (one deployment per group)."""
    return "deployment-crash" if item.nodeid.startswith(_CRASH_MODULES) else "deployment"


class _StdlibToStructlog(logging.Handler):
    """Hands stdlib log records to structlog while a test captures structlog events.

    Airflow 3.1+ logs a hook's ``self.log`` through structlog, 2.11 and 3.0 through stdlib logging: with
    this handler on the root logger there, ``structlog.testing.capture_logs()`` sees the same messages.
    """

    def emit(self, record: logging.LogRecord) -> None:
        import structlog
        from structlog.testing import LogCapture

        if any(isinstance(p, LogCapture) for p in structlog.get_config()["processors"]):
            structlog.get_logger(record.name).log(record.levelno, record.getMessage())


@pytest.fixture(autouse=True)
def _airflow2_logs_reach_structlog() -> Iterator[None]:
    # Hooks log through structlog from 3.1; 2.11 and 3.0 log them through stdlib logging.
    if AIRFLOW_MINOR >= (3, 1):
        yield
        return
    import airflow  # noqa: F401  (configures logging first, which would drop a handler added earlier)

    handler = _StdlibToStructlog()
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Create the metadata DB once per session (needed by dag.test and the CLI)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    from tests.support.in_process_api import reuse_in_process_execution_api

    # Before 3.3 dag.test() builds the execution API anew for every task (seconds each).
    reuse_in_process_execution_api()
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
