"""The built wheel, as users receive it: installed into a clean venv with Airflow, the demo DAG runs.

``make dist`` builds the sdist and wheel into ``dist/`` (and runs ``twine check``), then this test
with ``KLING_WHEEL_DIST=dist``; run alone, it builds a wheel itself. The clean venv gets the wheel
(never the source tree) and the same Airflow as ``.venv``, resolved to the versions ``.venv`` has (uv's
cache makes that quick). From a folder outside the checkout, so nothing imports the source tree: the
emulator starts from the wheel's own ``python -m airflow_provider_kling.emulator``, and
``airflow dags test example_kling_basic`` makes and downloads a video through it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_kling import __version__

pytestmark = [pytest.mark.wheel, pytest.mark.airflow3, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
DIST_ENV = "KLING_WHEEL_DIST"
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def _run(cmd: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$KLING_WHEEL_DIST/*.whl`` (from ``make dist``), or one built now with uv."""
    if os.environ.get(DIST_ENV):
        found = sorted(Path(os.environ[DIST_ENV]).glob(f"airflow_provider_kling-{__version__}-*.whl"))
        assert found, f"no wheel of {__version__} in ${DIST_ENV}"
        return found[-1].resolve()
    assert UV, "uv is needed to build the wheel"
    out = tmp_path_factory.mktemp("wheel")
    _run([UV, "build", "--wheel", "--out-dir", out, ROOT], cwd=ROOT, timeout=600)
    return next(out.glob("*.whl"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the wheel and the Airflow of ``.venv`` (same versions of everything)."""
    assert UV, "uv is needed to create the venv"
    work = tmp_path_factory.mktemp("wheel-venv")
    target = work / "venv"
    _run([UV, "venv", "--quiet", "--python", sys.executable, target], timeout=300)
    # Pin what .venv has, so uv takes the same versions from its cache (no new resolution, no surprise
    # upgrade); the provider itself comes from the wheel only.
    frozen = _run([UV, "pip", "freeze", "--python", sys.executable, "--exclude-editable"], timeout=120).stdout
    pins = [
        line for line in frozen.splitlines() if line and not line.lower().startswith("airflow-provider-kling")
    ]
    constraints = work / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    airflow = importlib.metadata.version("apache-airflow")
    _run(
        [UV, "pip", "install", "--quiet", "--python", target / "bin" / "python", wheel,
         f"apache-airflow=={airflow}", "--constraint", constraints],
        cwd=work,
        timeout=900,
    )  # fmt: skip
    return target


def test_wheel_version_is_the_package_version(wheel: Path) -> None:
    """One version: pyproject reads airflow_provider_kling.__version__ (contents: e2e/test_packaging.py)."""
    assert wheel.name.startswith(f"airflow_provider_kling-{__version__}-")
    metadata = (
        zipfile.ZipFile(wheel).read(f"airflow_provider_kling-{__version__}.dist-info/METADATA").decode()
    )
    assert f"\nVersion: {__version__}\n" in metadata


@pytest.fixture
def outside(tmp_path: Path, venv: Path) -> Path:
    """A working folder outside the checkout: ``python -m`` there imports only what the venv has."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def _clean_env(**extra: str) -> dict[str, str]:
    # Nothing from the test process's Airflow setup or the checkout's import path.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KLING")) and k != "PYTHONPATH"
    }
    env.update(extra)
    return env


@pytest.fixture
def emulator(venv: Path, outside: Path) -> Iterator[tuple[str, str]]:
    """The emulator from the wheel (``python -m airflow_provider_kling.emulator``): (url, key)."""
    key = secrets.token_hex(16)
    log = outside / "emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "python"), "-m", "airflow_provider_kling.emulator", "--port", "0",
             "--generation-seconds", "2"],
            cwd=outside,
            env=_clean_env(KLING_EMULATOR_API_KEY=key),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        url = ""
        while not url:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            found = re.search(r"listening on (http\S+)", log.read_text())
            url = found.group(1) if found else ""
            time.sleep(0.2)
        yield url, key
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_demo_dag_runs_from_the_installed_wheel(venv: Path, outside: Path, emulator: tuple[str, str]) -> None:
    python = venv / "bin" / "python"
    where = _run(
        [python, "-c", "import airflow_provider_kling as p; print(p.__file__, p.__version__)"], cwd=outside
    )
    path, version = where.stdout.split()
    assert Path(path).is_relative_to(venv), path  # the wheel's copy, not the checkout
    assert version == __version__

    url, key = emulator
    home, dags, videos = outside / "airflow", outside / "dags", outside / "videos"
    for folder in (home, dags, videos):
        folder.mkdir()
    shutil.copy(ROOT / "example_dags" / "example_kling_basic.py", dags)
    connection = {
        "conn_type": "kling",
        "host": url,
        "password": key,
        "extra": {"allow_loopback_downloads": True},
    }
    env = _clean_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW_CONN_KLING_DEFAULT=json.dumps(connection),
        KLING_DOWNLOAD_DIR=str(videos),
        KLING_POLL_INTERVAL="1",
        KLING_TIMEOUT="300",
    )
    airflow = venv / "bin" / "airflow"
    providers = _run([airflow, "providers", "list", "-o", "json"], cwd=outside, env=env, timeout=300).stdout
    listed = json.loads(providers[providers.index("[") :])
    assert {"package_name": "airflow-provider-kling", "version": __version__}.items() <= next(
        p for p in listed if p["package_name"] == "airflow-provider-kling"
    ).items()
    _run([airflow, "db", "migrate"], cwd=outside, env=env, timeout=600)
    run = _run([airflow, "dags", "test", "example_kling_basic"], cwd=outside, env=env, timeout=600)
    assert "state=success" in run.stdout + run.stderr or "success" in run.stdout.lower(), run.stdout[-3000:]

    made = list(videos.rglob("*.mp4"))
    assert len(made) == 1, made
    packaged = next((Path(path).parent / "emulator").glob("*.mp4"))
    assert made[0].read_bytes() == packaged.read_bytes()
