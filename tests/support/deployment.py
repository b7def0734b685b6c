"""A real Airflow deployment for end-to-end tests: api-server, scheduler, dag-processor, triggerer.

:class:`Deployment` starts every Airflow component as its own process (LocalExecutor, SQLite
metadata DB, the Simple auth manager with a known admin password) in a temporary ``AIRFLOW_HOME``,
plus the Kling emulator in another process, and tears all of it down by process group, also when a
test fails. Each process writes its output to ``<home>/process-logs/<name>.log``; on teardown those
logs and the task logs are copied to ``test-artifacts/e2e-logs/`` for inspection after a failed run.

Test modules share one deployment per pytest session: import the ``deployment`` fixture::

    from tests.support.deployment import Deployment, deployment_fixture  # noqa: F401

The first module that asks starts it; it stops after the last test that needs it (or when pytest
exits). SQLite is enough here: since Airflow 3, LocalExecutor runs with it, and task processes reach
the database only through the api-server's execution API.

``python -m tests.support.deployment`` starts one by hand and keeps it up (see :func:`main`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import tenacity

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
TEST_DAGS = ROOT / "tests" / "dags"
ARTIFACTS = ROOT / "test-artifacts"

#: A recognisable key: the leak checks search every log, XCom and DB row for it.
API_KEY = "kling-e2e-secret-" + secrets.token_hex(8)
#: A second recognisable key, one the emulator refuses (connection ``kling_refused``).
REFUSED_KEY = "kling-e2e-refused-" + secrets.token_hex(8)
ADMIN_USER = "admin"
ADMIN_PASSWORD = "e2e-admin-" + secrets.token_hex(6)
#: A second user, role viewer, denied the DAGs in VIEWER_DENIED_DAGS by tests/support/auth_manager.py.
VIEWER_USER = "viewer"
VIEWER_PASSWORD = "e2e-viewer-" + secrets.token_hex(6)
VIEWER_DENIED_DAGS = ("kling_gallery_private",)
#: How long each emulated generation takes: long enough to see a task deferred, to stop the
#: triggerer mid-poll and to resume a retried task before the generation ends, short enough to keep
#: the suite quick.
GENERATION_SECONDS = 12.0

T = TypeVar("T")


# Tries of a REST call the api-server answered with a database error (SQLite busy past its timeout).
DB_ERROR_ATTEMPTS = 4


def _database_error(resp: requests.Response) -> bool:
    return resp.status_code == 500 and "Database error" in resp.text


def _last_answer(state: tenacity.RetryCallState) -> requests.Response:
    assert state.outcome is not None
    return state.outcome.result()


class DeploymentError(RuntimeError):
    """The deployment did not start or did not reach an expected state in time."""


def sqlite_url(home: Path) -> str:
    """A deployment's SQLite database, whose writers wait up to 30 s for its lock (sqlite3's default
    is 5 s): under the load of a full test run, a scheduler and a dag-processor hold it longer."""
    return f"sqlite:///{home}/airflow.db?timeout=30"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5, on_fail: Any = None
) -> T:
    """Call ``check`` until it returns something truthy; DeploymentError after ``timeout`` seconds.

    :param what: the awaited condition, for the error message.
    :param check: returns a truthy value when the condition holds.
    :param timeout: seconds to wait at most.
    :param interval: seconds between checks.
    :param on_fail: optional callable whose result is added to the error message (e.g. log tails).
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            result = check()
        except DeploymentError:
            raise
        except Exception as exc:  # a server still starting refuses connections
            last_exc = exc
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            extra = f"\n{on_fail()}" if on_fail else ""
            raise DeploymentError(f"timed out after {timeout:.0f} s waiting for {what}{detail}{extra}")
        time.sleep(interval)


@dataclass
class RunWatch:
    """What :meth:`Deployment.watch_run` saw of one run.

    :param dag_id: the DAG.
    :param run_id: the run.
    :param states: every state seen per (task_id, map_index).
    :param triggers: per (task_id, map_index), the live trigger seen while deferred.
    :param final_state: the run's final state.
    """

    dag_id: str
    run_id: str
    states: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    triggers: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    final_state: str = ""


class Deployment:
    """A running Airflow deployment with the Kling emulator, driven through the REST API.

    :param home: the AIRFLOW_HOME to use (an empty folder; the caller removes it after :meth:`stop`).
    :param generation_seconds: how long each emulated generation takes.
    """

    #: The folder under test-artifacts/ that receives the logs on :meth:`stop`.
    artifacts_name = "e2e-logs"

    def __init__(self, home: Path, generation_seconds: float = GENERATION_SECONDS) -> None:
        self.home = home
        self.generation_seconds = generation_seconds
        self.process_logs = home / "process-logs"
        self.task_logs = home / "logs"
        self.markers = home / "markers"
        self.videos = home / "videos"
        self.fernet_key = _fernet_key()
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.emulator_url = ""
        self.api_key = API_KEY
        self.refused_key = REFUSED_KEY
        self.admin_user = ADMIN_USER
        self.admin_password = ADMIN_PASSWORD
        self.viewer_user = VIEWER_USER
        self.viewer_password = VIEWER_PASSWORD
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, Any] = {}
        self._token: str | None = None
        self.env: dict[str, str] = {}
        self.http = requests.Session()

    # ------------------------------------------------------------------ lifecycle

    def start(self, dag_ids: tuple[str, ...] = ()) -> Deployment:
        """Start the emulator and every Airflow component; wait until all are healthy.

        :param dag_ids: DAGs that must be parsed (visible in the REST API) before returning.
        """
        for folder in (self.process_logs, self.task_logs, self.markers, self.videos):
            folder.mkdir(parents=True, exist_ok=True)
        self._start_emulator()
        self._start_services()
        self.env = self._environment()
        (self.home / "passwords.json").write_text(
            json.dumps({self.admin_user: self.admin_password, self.viewer_user: self.viewer_password})
        )
        migrate = self.airflow("db", "migrate", timeout=600)
        if migrate.returncode != 0:
            output = migrate.stdout[-3000:] + migrate.stderr[-3000:]
            raise DeploymentError(f"airflow db migrate failed:\n{output}")
        self.start_component("api-server", "--port", str(self.api_port), "--host", "127.0.0.1")
        for name, args in self.components():
            self.start_component(name, *args)
        health = f"{self.base_url}/api/v2/monitor/health"
        wait_for(
            "the api-server to answer",
            lambda: self._alive_or_raise() and self.http.get(health, timeout=5).ok,
            timeout=240,
            on_fail=self.log_tails,
        )
        self.wait_healthy()
        for dag_id in dag_ids:
            self.wait_dag(dag_id)
        return self

    def components(self) -> list[tuple[str, tuple[str, ...]]]:
        """The processes started after the api-server: (name, arguments); a subclass adds its own."""
        return [("scheduler", ()), ("dag-processor", ()), ("triggerer", ())]

    def _start_services(self) -> None:
        """Start what Airflow needs before ``db migrate`` (nothing here: SQLite); see subclasses."""

    def wait_healthy(self, timeout: float = 240) -> dict[str, Any]:
        """Wait until the metadata DB, scheduler, triggerer and dag-processor all report healthy."""

        def healthy() -> dict[str, Any] | None:
            self._alive_or_raise()
            body = self.http.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ok = all((body.get(p) or {}).get("status") == "healthy" for p in parts)
            return body if ok else None

        return wait_for("all components to report healthy", healthy, timeout=timeout, on_fail=self.log_tails)

    def stop(self) -> None:
        """Stop every process (SIGTERM to its group, then SIGKILL) and keep copies of the logs."""
        self._stop_processes()
        for handle in self._log_files.values():
            with contextlib.suppress(Exception):
                handle.close()
        self._log_files.clear()
        self.http.close()
        with contextlib.suppress(Exception):
            target = ARTIFACTS / self.artifacts_name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.process_logs, target / "process-logs")
            shutil.copytree(self.task_logs, target / "task-logs", dirs_exist_ok=True)

    def _stop_processes(self) -> None:
        # SIGTERM everything first so the components shut down in parallel, then reap each group.
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for name in list(self.procs):
            self.stop_component(name)

    def start_component(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``airflow <name> <args>`` (or the emulator) in its own process group, output to its log."""
        if name in self.procs and self.procs[name].poll() is None:
            raise DeploymentError(f"{name} is already running")
        cmd, env = self._command(name, args)
        log = self._log_files.get(name)
        if log is None or log.closed:
            log = self._log_files[name] = open(self.process_logs / f"{name}.log", "ab")
        log.write(f"\n===== {time.strftime('%H:%M:%S')} starting: {' '.join(cmd[1:])}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, env=env, cwd=self.home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def _command(self, name: str, args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of process ``name`` (a subclass adds its own kinds)."""
        if name == "emulator":
            cmd = [sys.executable, "-m", "airflow_provider_kling.emulator", *args]
            # The key goes through the environment: a command line is visible to every local user.
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            env["KLING_EMULATOR_API_KEY"] = self.api_key
        else:
            cmd = [sys.executable, "-m", "airflow", name, *args]
            env = self.env
        return cmd, env

    def stop_component(self, name: str, grace: float = 30.0) -> int | None:
        """Stop one process group: SIGTERM, then SIGKILL after ``grace`` seconds; return its exit code."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Children (executor workers, task processes) may outlive the leader: clean the whole group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        return proc.returncode

    def _alive_or_raise(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise DeploymentError(f"{name} exited with {proc.returncode}\n{self.log_tails()}")
        return True

    def _start_emulator(self) -> None:
        self.start_component(
            "emulator",
            "--port",
            "0",
            "--generation-seconds",
            str(self.generation_seconds),
        )
        log_path = self.process_logs / "emulator.log"

        def listening() -> str | None:
            self._alive_or_raise()
            for line in log_path.read_text(errors="replace").splitlines():
                if "listening on " in line:
                    return line.rsplit("listening on ", 1)[1].strip()
            return None

        self.emulator_url = wait_for("the emulator to listen", listening, timeout=60, on_fail=self.log_tails)

    def _environment(self) -> dict[str, str]:
        # Nothing from the test process's own Airflow setup (conftest's AIRFLOW_HOME, connections) leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.pop("KLING_API_KEY", None)
        bundles = [
            {
                "name": name,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(path)},
            }
            for name, path in (("kling_examples", EXAMPLE_DAGS), ("kling_tests", TEST_DAGS))
        ]
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.admin_user}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlite_url(self.home),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                # The task supervisor notices its task process's exit at the latest after this many
                # seconds (default 5). Airflow 3.3 fails a resumed deferred task when that exit (the
                # defer) is reported after the trigger already fired and the task was queued again
                # (apache/airflow#67287, #72716); short generations in these tests hit that race.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                # Fixed default ports would collide with other servers on the machine.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.task_logs),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                # The emulator serves videos over http from 127.0.0.1: the connections allow that.
                "AIRFLOW_CONN_KLING_DEFAULT": json.dumps(
                    {
                        "conn_type": "kling",
                        "host": self.emulator_url,
                        "password": self.api_key,
                        # A POST lost at a kill that never reached the service is sent again after
                        # a minute of not showing in /v2/logs (ten by default), so runs stay short.
                        "extra": {
                            "allow_loopback_downloads": True,
                            "reconcile_window_seconds": 60,
                            "reconcile_poll_seconds": 2,
                        },
                    }
                ),
                "AIRFLOW_CONN_KLING_REFUSED": json.dumps(
                    {
                        "conn_type": "kling",
                        "host": self.emulator_url,
                        "password": self.refused_key,
                        "extra": {"allow_loopback_downloads": True},
                    }
                ),
                # Read by the DAGs in tests/dags/deploy_*.py.
                "KLING_DEPLOY_MARKERS": str(self.markers),
                "KLING_DEPLOY_OUT": str(self.videos),
                # Read by the example DAGs: poll fast against the emulator, download under the home.
                "KLING_DOWNLOAD_DIR": str(self.videos),
                # The gallery streams only what lies under the folder the DAGs download to.
                "AIRFLOW__KLING__GALLERY_ROOTS": str(self.videos),
                "KLING_POLL_INTERVAL": "1",
                "KLING_TIMEOUT": "600",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # A viewer denied some DAGs (tests/e2e/test_gallery.py): the Simple auth manager plus per-DAG
        # denials, imported from tests/ by the api-server.
        env.update(
            {
                "AIRFLOW__CORE__AUTH_MANAGER": "tests.support.auth_manager.DagDenyingAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": (
                    f"{self.admin_user}:admin,{self.viewer_user}:viewer"
                ),
                "KLING_TEST_DENIED_DAGS": ",".join(f"{self.viewer_user}:{d}" for d in VIEWER_DENIED_DAGS),
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
            }
        )
        return env

    def save(self, path: Path) -> None:
        """Write what :meth:`attach` needs to drive this deployment from another process."""
        state = {
            "home": str(self.home),
            "generation_seconds": self.generation_seconds,
            "fernet_key": self.fernet_key,
            "api_port": self.api_port,
            "emulator_url": self.emulator_url,
            "api_key": self.api_key,
            "refused_key": self.refused_key,
            "admin_password": self.admin_password,
            "viewer_password": self.viewer_password,
            "env": self.env,
        }
        path.write_text(json.dumps(state))
        path.chmod(0o600)

    @classmethod
    def attach(cls, path: Path) -> Deployment:
        """A handle on a deployment another process started and saved with :meth:`save`."""
        state = json.loads(path.read_text())
        dep = cls(Path(state["home"]), state["generation_seconds"])
        dep.fernet_key = state["fernet_key"]
        dep.api_port = state["api_port"]
        dep.base_url = f"http://127.0.0.1:{dep.api_port}"
        dep.emulator_url = state["emulator_url"]
        dep.api_key = state["api_key"]
        dep.refused_key = state["refused_key"]
        dep.admin_password = state["admin_password"]
        dep.viewer_password = state.get("viewer_password", dep.viewer_password)
        dep.env = state["env"]
        return dep

    # ------------------------------------------------------------------ diagnostics

    def log_path(self, name: str) -> Path:
        """The output file of one process (``api-server``, ``triggerer``, ``emulator``, ...)."""
        return self.process_logs / f"{name}.log"

    def log_text(self, name: str) -> str:
        """Everything one process has written so far."""
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every process log, for error messages."""
        parts = []
        for path in sorted(self.process_logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {path.name} -----\n" + "\n".join(tail))
        return "\n".join(parts)

    def airflow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command against this deployment."""
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # ------------------------------------------------------------------ REST API

    def token(self) -> str:
        """A JWT for the admin user from ``POST /auth/token``."""
        if self._token is None:
            resp = self.http.post(
                f"{self.base_url}/auth/token",
                json={"username": self.admin_user, "password": self.admin_password},
                timeout=30,
            )
            resp.raise_for_status()
            self._token = str(resp.json()["access_token"])
        return self._token

    def api(
        self, method: str, path: str, *, expect: int | None = None, prefix: str = "/api/v2", **kwargs: Any
    ) -> Any:
        """Call the REST API as the admin; JSON answer (text if not JSON).

        :param expect: the status code required; by default any 2xx.
        :param prefix: ``/api/v2`` (public API) or ``/ui`` (the UI's own endpoints).
        """
        # A "Database error" answer rolled its transaction back, so asking again is safe for every
        # method: it is SQLite's lock outlasting its timeout on a loaded machine.
        resp = tenacity.Retrying(
            retry=tenacity.retry_if_result(_database_error),
            stop=tenacity.stop_after_attempt(DB_ERROR_ATTEMPTS),
            wait=tenacity.wait_incrementing(start=2, increment=2),
            retry_error_callback=_last_answer,
        )(
            self.http.request,
            method,
            f"{self.base_url}{prefix}{path}",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=60,
            **kwargs,
        )
        if (resp.status_code != expect) if expect is not None else not resp.ok:
            cause = self._server_error(resp.text)
            raise DeploymentError(f"{method} {path} answered {resp.status_code}: {resp.text[:2000]}{cause}")
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def _server_error(self, answer: str) -> str:
        """The api-server's log lines about the error id an answer names (the answer hides the cause)."""
        found = re.search(r"look for ID (\w+)", answer)
        log = self.process_logs / "api-server.log"
        if not found or not log.exists():
            return ""
        lines = log.read_text(errors="replace").splitlines()
        hits = [i for i, line in enumerate(lines) if found.group(1) in line]
        return "\n----- api-server.log -----\n" + "\n".join(lines[hits[0] : hits[0] + 40]) if hits else ""

    def wait_dag(self, dag_id: str, timeout: float = 240) -> dict[str, Any]:
        """Wait until the dag-processor has parsed ``dag_id`` and the API knows it."""

        def known() -> dict[str, Any] | None:
            self._alive_or_raise()
            resp = self.http.get(
                f"{self.base_url}/api/v2/dags/{dag_id}",
                headers={"Authorization": f"Bearer {self.token()}"},
                timeout=10,
            )
            return resp.json() if resp.status_code == 200 else None

        return wait_for(f"DAG {dag_id} to be parsed", known, timeout=timeout, on_fail=self._import_errors)

    def _import_errors(self) -> str:
        with contextlib.suppress(Exception):
            return json.dumps(self.api("GET", "/importErrors"), indent=1)[:4000] + "\n" + self.log_tails()
        return self.log_tails()

    def trigger(self, dag_id: str, run_id: str | None = None, conf: dict[str, Any] | None = None) -> str:
        """Unpause ``dag_id`` and create a manual run through the REST API; return the run id."""
        self.wait_dag(dag_id)
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run_id = run_id or f"e2e__{dag_id}__{secrets.token_hex(4)}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        created = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(created["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """The dag run as the REST API shows it."""
        return dict(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        """Wait until the run is finished; return its final state (``success`` or ``failed``)."""

        def finished() -> str | None:
            self._alive_or_raise()
            state = self.run(dag_id, run_id)["state"]
            return state if state in ("success", "failed") else None

        return wait_for(
            f"run {dag_id}/{run_id} to finish",
            finished,
            timeout=timeout,
            interval=1.0,
            on_fail=lambda: self.describe_run(dag_id, run_id),
        )

    def watch_run(self, dag_id: str, run_id: str, timeout: float = 300) -> RunWatch:
        """Follow a run until it finishes, recording every state each task instance was seen in.

        While a task instance is deferred, its live trigger (class path) and the triggerer job
        holding it are recorded too.
        """
        watch = RunWatch(dag_id=dag_id, run_id=run_id)

        def sample() -> str | None:
            self._alive_or_raise()
            body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
            for ti in body["task_instances"]:
                key = (ti["task_id"], ti["map_index"])
                watch.states.setdefault(key, set()).add(str(ti["state"]))
                if ti["state"] == "deferred" and ti.get("trigger"):
                    watch.triggers.setdefault(key, []).append(
                        {"classpath": ti["trigger"]["classpath"], "triggerer_job": ti.get("triggerer_job")}
                    )
            state = self.run(dag_id, run_id)["state"]
            return state if state in ("success", "failed") else None

        watch.final_state = wait_for(
            f"run {dag_id}/{run_id} to finish",
            sample,
            timeout=timeout,
            interval=0.4,
            on_fail=lambda: self.describe_run(dag_id, run_id),
        )
        return watch

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's task instances keyed by task id (unmapped tasks)."""
        body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """One task instance as the REST API shows it (includes a live trigger while deferred)."""
        return dict(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def wait_ti_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float = 180
    ) -> dict[str, Any]:
        """Wait until a task instance is in ``state``; return it."""

        def reached() -> dict[str, Any] | None:
            self._alive_or_raise()
            ti = self.task_instance(dag_id, run_id, task_id)
            return ti if ti["state"] == state else None

        return wait_for(
            f"{dag_id}/{run_id}/{task_id} to be {state}",
            reached,
            timeout=timeout,
            interval=0.5,
            on_fail=lambda: self.describe_run(dag_id, run_id),
        )

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of a task instance (from the TI history and the TI), oldest first."""
        body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        return sorted(body["task_instances"], key=lambda t: t["try_number"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The full text of one try's task log through the REST API (trigger output included)."""
        resp = self.http.get(
            f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Authorization": f"Bearer {self.token()}", "Accept": "application/json"},
            timeout=60,
        )
        if resp.status_code != 200:
            raise DeploymentError(f"log of {task_id} try {try_number}: {resp.status_code} {resp.text[:500]}")
        content = resp.json().get("content")
        if isinstance(content, list):
            return "\n".join(json.dumps(item) if isinstance(item, dict) else str(item) for item in content)
        return str(content)

    def xcoms(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """Every XCom of a task instance, key -> deserialized value."""
        body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries")
        out = {}
        for entry in body["xcom_entries"]:
            value = self.api(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{entry['key']}",
                params={"deserialize": "true", "map_index": entry.get("map_index", -1)},
            )
            out[entry["key"]] = value.get("value")
        return out

    def describe_run(self, dag_id: str, run_id: str) -> str:
        """Run and task states plus log tails, for failure messages."""
        with contextlib.suppress(Exception):
            tis = self.task_instances(dag_id, run_id)
            states = {k: v["state"] for k, v in tis.items()}
            return f"run {run_id}: {self.run(dag_id, run_id)['state']}; tasks: {states}\n{self.log_tails()}"
        return self.log_tails()

    # ------------------------------------------------------------------ emulator control

    def emulator(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the emulator's control API (``/_emulator`` + path)."""
        resp = self.http.request(method, f"{self.emulator_url}/_emulator{path}", timeout=30, **kwargs)
        resp.raise_for_status()
        return resp.json()

    def generations_for(self, tag: str) -> list[dict[str, Any]]:
        """The emulator's generations whose prompt contains ``tag`` (one per paid POST)."""
        gens = self.emulator("GET", "/generations").values()
        return [g for g in gens if tag in g["prompt"]]

    def posts_for(self, tag: str) -> int:
        """How many POSTs (accepted or not) carried ``tag`` in their prompt."""
        return sum(
            1
            for r in self.emulator("GET", "/requests")
            if r["method"] == "POST" and isinstance(r["json"], dict) and tag in str(r["json"].get("prompt"))
        )

    def polls_for(self, generation_id: str) -> list[dict[str, Any]]:
        """The recorded GET polls of one generation, oldest first."""
        return [
            r
            for r in self.emulator("GET", "/requests")
            if r["method"] == "GET" and r["query"].get("generation_id") == generation_id
        ]


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


#: Set to a file written by ``python -m tests.support.deployment --hold FILE`` to run the tests against that
#: already running deployment instead of starting one (quicker while writing tests).
ATTACH_ENV = "KLING_E2E_ATTACH"

_shared: Deployment | None = None
_shared_error: BaseException | None = None
_attached = False


def shared_deployment(config: pytest.Config) -> Deployment:
    """The session's one deployment, started on first use (stopped by :func:`release_shared`)."""
    global _shared, _shared_error, _attached
    if _shared_error is not None:
        pytest.fail(f"the Airflow deployment failed to start earlier: {_shared_error}", pytrace=False)
    if _shared is None and os.environ.get(ATTACH_ENV):
        _shared = Deployment.attach(Path(os.environ[ATTACH_ENV]))
        _attached = True
    if _shared is None:
        home = Path(tempfile.mkdtemp(prefix="kling-e2e-home-"))
        dep = Deployment(home)
        if os.environ.get("PYTEST_XDIST_WORKER"):
            # Two workers may each run a deployment (tests/conftest.py): one logs folder each.
            dep.artifacts_name = f"{dep.artifacts_name}-{os.environ['PYTEST_XDIST_WORKER']}"
        # Also when pytest is interrupted: nothing is left running.
        config.add_cleanup(release_shared)
        _shared = dep
        try:
            dep.start()
        except BaseException as exc:
            _shared_error = exc
            release_shared()
            raise
    return _shared


def release_shared() -> None:
    """Stop the shared deployment (if this session started it) and remove its home."""
    global _shared
    dep, _shared = _shared, None
    if dep is None or _attached:
        return
    dep.stop()
    shutil.rmtree(dep.home, ignore_errors=True)


def _xdist_group(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0]) if mark is not None and mark.args else None


@pytest.fixture(scope="module", name="deployment")
def deployment_fixture(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The shared running deployment (see the module docstring).

    It stops as soon as no test left in the session needs it, so its processes do not load the
    machine while other tests run.
    """
    yield shared_deployment(request.config)
    items = request.session.items
    here = [i for i, item in enumerate(items) if item.nodeid.startswith(request.node.nodeid + "::")]
    later = items[max(here) + 1 :] if here else []
    if here and os.environ.get("PYTEST_XDIST_WORKER"):
        # Under pytest-xdist this process runs only its group's tests (tests/conftest.py).
        group = _xdist_group(items[here[0]])
        later = [item for item in later if _xdist_group(item) == group]
    if not any("deployment" in getattr(item, "fixturenames", ()) for item in later):
        release_shared()


def stop_on_signals() -> Callable[[], None]:
    """Catch SIGTERM and SIGINT (Ctrl-C) from now on, for a ``main`` that keeps a deployment up.

    :return: a call that blocks until one of them has come (at once if one came already), so the
        caller then stops what it started.
    """
    stopped: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopped.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def hold() -> None:
        while not stopped:
            time.sleep(0.5)

    return hold


def main() -> None:
    """``python -m tests.support.deployment [--hold FILE]``: start a deployment, keep it up until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--hold", type=Path, help=f"write its details here, for {ATTACH_ENV}=FILE pytest ...")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kling-e2e-home-"))
    dep = Deployment(home)
    hold = stop_on_signals()
    try:
        dep.start()
        if args.hold:
            dep.save(args.hold)
        print(f"Airflow UI {dep.base_url} (user {dep.admin_user}, password {dep.admin_password})", flush=True)
        print(f"Kling emulator {dep.emulator_url}; AIRFLOW_HOME {home}", flush=True)
        hold()
    finally:
        dep.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
