"""A distributed Airflow deployment for end-to-end tests: CeleryExecutor on PostgreSQL and Redis.

:class:`DistributedDeployment` extends :class:`tests.support.deployment.Deployment` (same api-server, REST
helpers, emulator, connections, DAG bundles) with what production deployments run instead of
LocalExecutor on SQLite:

- **PostgreSQL** (Debian's server, ``scripts/ensure_postgres_redis.sh`` installs it when missing):
  ``initdb`` into a private data directory, run as the ``postgres`` user (never as root) on a free
  loopback port, its unix socket in a private folder, password authentication over TCP.
- **Redis** on a free loopback port, no persistence, as the Celery broker.
- Airflow with ``CeleryExecutor``: api-server, scheduler, dag-processor, **two Celery workers**
  (``--celery-hostname`` ``worker-1@…``/``worker-2@…``, and each its own task-instance hostname
  through ``[core] hostname_callable``) and **two triggerers** (``triggerer-1``/``triggerer-2``, short
  health-check threshold so a dead one's triggers are adopted quickly).

Every process runs in its own process group, and all of them are stopped at the end, also on
failure. Logs land in ``test-artifacts/e2e-distributed-logs/``.

``python -m tests.support.deployment_distributed`` starts one by hand and keeps it up.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.deployment import ROOT, Deployment, DeploymentError, free_port, stop_on_signals, wait_for

#: The Celery workers and triggerers this deployment runs (their process and host names).
WORKERS = ("worker-1", "worker-2")
TRIGGERERS = ("triggerer-1", "triggerer-2")
#: Seconds without a heartbeat after which a triggerer counts as dead and its triggers are adopted
#: (Airflow's default is 30).
TRIGGERER_HEALTH_CHECK_THRESHOLD = 10
#: Seconds without a task heartbeat after which the scheduler fails a running task instance (Airflow's
#: default is 300): how soon a task on a killed worker is retried.
TASK_HEARTBEAT_TIMEOUT = 20
#: Seconds a task may stay queued with no worker running it before the scheduler requeues it
#: (Airflow's default is 600).
TASK_QUEUED_TIMEOUT = 60
#: Triggers one triggerer runs at most: fewer than the big run keeps in flight, so both triggerers must
#: share it (and enough for one to adopt all of a smaller run).
TRIGGERER_CAPACITY = 40
#: Task processes per Celery worker.
WORKER_CONCURRENCY = 4
ENSURE_SCRIPT = ROOT / "scripts" / "ensure_postgres_redis.sh"
HOSTNAME_ENV = "KLING_WORKER_HOSTNAME"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers and triggerers: the name the harness gave them."""
    import socket

    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL server's bin folder (``/usr/lib/postgresql/<major>/bin``)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise DeploymentError(f"no PostgreSQL server: run {ENSURE_SCRIPT}")
    return found[-1].parent


def ensure_installed() -> None:
    """Install PostgreSQL and Redis from Debian's packages if they are missing."""
    subprocess.run(["bash", str(ENSURE_SCRIPT)], check=True, timeout=900)


class DistributedDeployment(Deployment):
    """Airflow with CeleryExecutor on PostgreSQL and Redis: two workers, two triggerers.

    :param home: the AIRFLOW_HOME to use (an empty folder; the caller removes it after :meth:`stop`).
    :param generation_seconds: how long each emulated generation takes (prompts may override it).
    """

    artifacts_name = "e2e-distributed-logs"

    def __init__(self, home: Path, generation_seconds: float = 20.0) -> None:
        super().__init__(home, generation_seconds)
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.pg_password = "e2e-pg-" + secrets.token_hex(8)
        # PostgreSQL refuses to run as root and needs its data folder to be its own: a folder outside
        # the (root-only) home, owned by the user it runs as.
        self.pg_root = Path(tempfile.mkdtemp(prefix="kling-pg-"))
        self.pg_data = self.pg_root / "data"
        self.pg_socket_dir = self.pg_root / "socket"
        self.pg_user = self._pg_os_user()
        #: Airflow processes started again by :meth:`supervised` after they exited, per name.
        self.restarts: dict[str, int] = {}
        self._last_restart: dict[str, float] = {}
        self._supervising = False

    @property
    def db_url(self) -> str:
        """The metadata database as SQLAlchemy (psycopg2) reaches it."""
        return f"postgresql+psycopg2://airflow:{self.pg_password}@127.0.0.1:{self.pg_port}/airflow"

    # ------------------------------------------------------------------ services

    @staticmethod
    def _pg_os_user() -> pwd.struct_passwd | None:
        """The user PostgreSQL runs as: ``postgres`` when we are root, else ourselves (None)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError as exc:
            raise DeploymentError(f"no postgres user: run {ENSURE_SCRIPT}") from exc

    def _as_pg_user(self, cmd: list[str]) -> list[str]:
        if self.pg_user is None:
            return cmd
        # setpriv execs the command (no extra process between us and the postmaster).
        return [
            "setpriv",
            f"--reuid={self.pg_user.pw_uid}",
            f"--regid={self.pg_user.pw_gid}",
            "--init-groups",
            *cmd,
        ]

    def _start_services(self) -> None:
        self._init_postgres()
        self.start_postgres()
        self.start_component("redis")
        wait_for("Redis to answer", self._redis_ping, timeout=60, on_fail=self.log_tails)

    def _init_postgres(self) -> None:
        self.pg_socket_dir.mkdir(parents=True)
        pwfile = self.pg_root / "pwfile"
        pwfile.write_text(self.pg_password + "\n")
        if self.pg_user is not None:
            for path in (self.pg_root, self.pg_socket_dir, pwfile):
                os.chown(path, self.pg_user.pw_uid, self.pg_user.pw_gid)
        self.pg_root.chmod(0o700)
        init = subprocess.run(
            self._as_pg_user(
                [
                    str(postgres_bin() / "initdb"),
                    "-D",
                    str(self.pg_data),
                    "-U",
                    "airflow",
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise DeploymentError(f"initdb failed:\n{init.stdout[-2000:]}{init.stderr[-2000:]}")

    def start_postgres(self) -> None:
        """Start PostgreSQL on its port (again, after :meth:`stop_postgres`) and wait until it answers."""
        self.start_component("postgres")
        wait_for("PostgreSQL to accept connections", self._pg_ready, timeout=120, on_fail=self.log_tails)
        if not self._pg_database_exists():
            self.psql("postgres", "CREATE DATABASE airflow")

    def stop_postgres(self) -> None:
        """A fast shutdown (SIGINT: clients disconnected, in-flight transactions rolled back)."""
        proc = self.procs.pop("postgres")
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)

    def _pg_ready(self) -> bool:
        probe = subprocess.run(
            [str(postgres_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-t", "2"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return probe.returncode == 0

    def _pg_database_exists(self) -> bool:
        out = self.psql("postgres", "SELECT 1 FROM pg_database WHERE datname = 'airflow'")
        return out.strip() == "1"

    def psql(self, database: str, sql: str) -> str:
        """Run SQL as the ``airflow`` superuser through the private unix socket; tuples only."""
        done = subprocess.run(
            self._as_pg_user(
                [
                    str(postgres_bin() / "psql"),
                    "-h",
                    str(self.pg_socket_dir),
                    "-p",
                    str(self.pg_port),
                    "-U",
                    "airflow",
                    "-d",
                    database,
                    "-tA",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    sql,
                ]
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise DeploymentError(f"psql failed: {done.stderr[-2000:]}")
        return done.stdout

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on the metadata database (a new connection each time: survives restarts)."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.pg_port,
            user="airflow",
            password=self.pg_password,
            dbname="airflow",
            connect_timeout=5,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def _redis_ping(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()

    # ------------------------------------------------------------------ processes

    def components(self) -> list[tuple[str, tuple[str, ...]]]:
        out: list[tuple[str, tuple[str, ...]]] = [("scheduler", ()), ("dag-processor", ())]
        out += [(name, ()) for name in TRIGGERERS]
        out += [(name, ()) for name in WORKERS]
        return out

    def _command(self, name: str, args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        if name == "postgres":
            cmd = [
                str(postgres_bin() / "postgres"),
                "-D",
                str(self.pg_data),
                "-p",
                str(self.pg_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.pg_socket_dir}",
                "-c",
                "max_connections=300",
                # A test database: durability traded for speed (a crash loses it anyway).
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                *args,
            ]
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            env.update({"LC_ALL": "C", "LANG": "C"})
            return self._as_pg_user(cmd), env
        if name == "redis":
            cmd = [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.home),
                *args,
            ]
            return cmd, {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        if name in TRIGGERERS:
            env = {**self.env, HOSTNAME_ENV: name}
            cmd = [
                sys.executable,
                "-m",
                "airflow",
                "triggerer",
                "--skip-serve-logs",
                "--capacity",
                str(TRIGGERER_CAPACITY),
                *args,
            ]
            return cmd, env
        if name in WORKERS:
            env = {**self.env, HOSTNAME_ENV: name}
            cmd = [
                sys.executable,
                "-m",
                "airflow",
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--skip-serve-logs",
                "--without-mingle",
                "--without-gossip",
                *args,
            ]
            return cmd, env
        return super()._command(name, args)

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "64",
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "400",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "5",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "10",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.db_url.replace("+psycopg2", ""),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
                # Workers and triggerers name themselves through KLING_WORKER_HOSTNAME.
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.support.deployment_distributed.worker_hostname",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_CHECK_THRESHOLD),
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
                # A Celery message a worker took while the database was down can leave its task
                # queued with no process behind it: the scheduler requeues such tasks after this
                # many seconds (default 600), and adopts a dead scheduler's tasks every 30 s.
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(TASK_QUEUED_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
                "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "64",
            }
        )
        return env

    def _stop_processes(self) -> None:
        # Airflow first (it still needs its database to shut down cleanly), then Redis and PostgreSQL.
        services = {name: self.procs.pop(name) for name in ("redis", "postgres") if name in self.procs}
        try:
            super()._stop_processes()
        finally:
            self.procs.update(services)
            for name in services:
                self.stop_component(name)
            shutil.rmtree(self.pg_root, ignore_errors=True)

    @contextlib.contextmanager
    def supervised(self) -> Iterator[None]:
        """Within: an Airflow process that exits is started again (a restart policy), not an error.

        Each restart is counted in :attr:`restarts`. The check runs whenever the harness checks that
        everything is alive (every wait does), and at most every 2 seconds per process.
        """
        self._supervising = True
        try:
            yield
        finally:
            self._supervising = False

    def _alive_or_raise(self) -> bool:
        if getattr(self, "_supervising", False):
            for name, proc in list(self.procs.items()):
                if name in ("postgres", "redis") or proc.poll() is None:
                    continue
                if time.monotonic() - self._last_restart.get(name, 0.0) < 2:
                    continue
                self.procs.pop(name)
                self._last_restart[name] = time.monotonic()
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self.start_component(name)
            return True
        return super()._alive_or_raise()

    def kill(self, name: str) -> subprocess.Popen[bytes]:
        """SIGKILL one process group at once (no shutdown of any kind); forget the process."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        return proc

    def wait_healthy(self, timeout: float = 240) -> dict[str, Any]:
        body = super().wait_healthy(timeout)
        # Both workers answer Celery's ping before any test counts on them.
        wait_for(
            "both Celery workers to answer", self._workers_ready, timeout=timeout, on_fail=self.log_tails
        )
        return body

    def _workers_ready(self) -> bool:
        self._alive_or_raise()
        logs = [self.log_text(name) for name in WORKERS if name in self.procs]
        return bool(logs) and all(" ready." in text for text in logs)


@contextlib.contextmanager
def distributed_deployment(dag_ids: tuple[str, ...] = ()) -> Iterator[DistributedDeployment]:
    """Install what is missing, start a distributed deployment, and stop it whatever happens."""
    ensure_installed()
    home = Path(tempfile.mkdtemp(prefix="kling-e2e-dist-home-"))
    dep = DistributedDeployment(home)
    try:
        dep.start(dag_ids)
        yield dep
    finally:
        dep.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    """``python -m tests.support.deployment_distributed``: start one and keep it up until Ctrl-C."""
    hold = stop_on_signals()
    started = time.monotonic()
    with distributed_deployment() as dep:
        print(f"started in {time.monotonic() - started:.0f} s", flush=True)
        print(f"Airflow UI {dep.base_url} (user {dep.admin_user}, password {dep.admin_password})", flush=True)
        print(f"Kling emulator {dep.emulator_url}; metadata DB {dep.db_url}", flush=True)
        hold()


if __name__ == "__main__":
    main()
