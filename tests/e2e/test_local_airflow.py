"""docs/local-airflow.md works as written: its commands, run in order, bring up `airflow standalone`
against the emulator and the basic example's run succeeds with an MP4 on disk.

Step 1 (build and install the wheel) is skipped here: it needs the network for Airflow's constraints
file, and `make dist` already installs the built wheel into a clean venv and runs a DAG there
(tests/test_wheel.py). Every later step runs exactly as the page prints it, with free ports chosen
through the variables the page reads.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.deployment import free_port, sqlite_url

pytestmark = [pytest.mark.e2e, pytest.mark.airflow3]

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "local-airflow.md"


def page_steps() -> list[str]:
    """The page's bash blocks of steps 2 to 5, in order (step 6 is Ctrl-C; the test stops what it started)."""
    text = PAGE.read_text()
    steps = text[text.index("## 2.") : text.index("## 6.")]
    return re.findall(r"```bash\n(.*?)```", steps, flags=re.S)


def _tail(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else f"(no {path.name})"


def _problems(path: Path) -> str:
    """The standalone log's error lines (its tail is mostly the DAG processor's routine lines)."""
    if not path.exists():
        return f"(no {path.name})"
    lines = path.read_text().splitlines()
    found = [line for line in lines if re.search(r"error|exception|locked|traceback|failed", line, re.I)]
    return "\n".join(found[-40:])[-6000:] + "\n" + "\n".join(lines[-20:])


def test_the_page_lists_every_step_it_is_run_by() -> None:
    blocks = page_steps()
    joined = "\n".join(blocks)
    needed_steps = ("kling.emulator", "airflow standalone", "dags trigger example_kling_basic")
    for needed in needed_steps:
        assert needed in joined


@pytest.mark.timeout(900)
def test_local_airflow_page_runs_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    airflow_home = tmp_path / "airflow"
    api_port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "KLING_", "PYTEST")) and key != "PYTHONPATH"
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(home),
        AIRFLOW_HOME=str(airflow_home),
        KLING_EMULATOR_PORT=str(free_port()),
        AIRFLOW__API__PORT=str(api_port),
        # Other deployments of the suite may hold Airflow's default log-server ports.
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        # The page's own database, waiting for SQLite's lock as the suite's deployments do: beside them,
        # a task's state update could otherwise meet "database is locked" and fail the run.
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite_url(airflow_home),
    )
    script = "set -euo pipefail\n" + "\n".join(page_steps())
    (tmp_path / "steps.sh").write_text(script)
    proc = subprocess.Popen(
        ["bash", str(tmp_path / "steps.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=840)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        standalone = _tail(airflow_home / "standalone.log")
        pytest.fail(f"the page's steps did not finish in 14 minutes:\n{out[-3000:]}\n{standalone}")
    finally:
        # The page's last step stops what it started; whatever it left goes here.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    task_logs = "".join(_tail(p) for p in (airflow_home / "logs").glob("dag_id=*/**/*.log"))
    assert proc.returncode == 0, out[-3000:] + _problems(airflow_home / "standalone.log") + task_logs
    assert re.search(r"example_kling_basic.*success", out), out[-4000:]
    videos = list((airflow_home / "kling_videos").rglob("*.mp4"))
    assert videos, out[-4000:]
    assert videos[0].read_bytes()[4:8] == b"ftyp"
    assert (airflow_home / "simple_auth_manager_passwords.json.generated").exists()
