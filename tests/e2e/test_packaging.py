"""What the built wheel says about itself (issue 11): license, dependencies, data files, nothing extra.

The wheel is built from a copy of the working tree (tests/ included, so its absence from the wheel is
proven), in a temporary folder: the checkout gets no build/ or dist/ from this test.
"""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]

#: Never part of a build: virtual environments, caches, build output, test output, the docs site.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv*", "*_cache", "__pycache__", "*.egg-info", "build", "dist", "site", "test-artifacts",
    ".demo", "node_modules",
)  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    source = tmp_path_factory.mktemp("source") / "airflow-provider-kling"
    shutil.copytree(ROOT, source, ignore=_NOT_COPIED)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = out.glob("airflow_provider_kling-*.whl")
    with zipfile.ZipFile(built) as zf:
        yield zf


def _dist_info(wheel: zipfile.ZipFile) -> str:
    (name,) = {n.split("/")[0] for n in wheel.namelist() if n.split("/")[0].endswith(".dist-info")}
    return name


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile) -> Message:
    text = wheel.read(f"{_dist_info(wheel)}/METADATA").decode()
    return email.parser.Parser().parsestr(text, headersonly=True)


def _requires(metadata: Message) -> dict[str, Requirement]:
    """Requires-Dist without extras' markers, by project name."""
    reqs = [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]
    return {r.name.lower(): r for r in reqs if r.marker is None}


def test_license_is_the_spdx_expression_and_the_file_ships(wheel: zipfile.ZipFile, metadata: Message) -> None:
    assert metadata["License-Expression"] == "Apache-2.0"
    # The SPDX field replaces the license classifier; both at once is an error on PyPI.
    assert not [c for c in metadata.get_all("Classifier") or [] if c.startswith("License ::")]
    assert metadata.get_all("License-File") == ["LICENSE"]
    shipped = wheel.read(f"{_dist_info(wheel)}/licenses/LICENSE").decode()
    assert shipped == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in shipped
    assert "Version 2.0, January 2004" in shipped


def test_directly_imported_libraries_are_declared(metadata: Message) -> None:
    """The provider imports tenacity and pydantic itself: Airflow 2.11 makes pydantic only an extra."""
    requires = _requires(metadata)
    for name in ("tenacity", "pydantic", "requests", "aiohttp", "pendulum"):
        assert name in requires, sorted(requires)
    # The oldest releases the provider works with (pyproject says why); Airflow 2.11 and 3.3 allow both.
    assert str(requires["tenacity"].specifier) == ">=8.2.1"
    assert str(requires["pydantic"].specifier) == ">=2.7.1"


def test_tested_airflow_range_agrees_everywhere(metadata: Message) -> None:
    """README's "2.11 to 3.3", the dependency floor and the pins files CI installs tell one range.

    There is no upper cap (Airflow's own providers have none); the upper end is the newest minor with a
    constraints/airflow-<minor>.txt, each of which `make test-airflow` can run.
    """
    airflow = _requires(metadata)["apache-airflow"]
    assert str(airflow.specifier) == ">=2.11.0"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"`apache-airflow` \((\d+\.\d+) to (\d+\.\d+)\)", readme)
    assert stated, "README's dependency table no longer states the Airflow range"
    low, high = stated.groups()
    minors = sorted(
        (Version(p.stem.removeprefix("airflow-")) for p in (ROOT / "constraints").glob("airflow-*.txt")),
    )
    assert Version(low) == minors[0] == Version("2.11")
    assert Version(high) == minors[-1], f"README says up to {high}; constraints/ goes to {minors[-1]}"
    assert "Framework :: Apache Airflow :: Provider" in (metadata.get_all("Classifier") or [])


def test_package_data_ships_and_tests_do_not(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "airflow_provider_kling/py.typed" in names
    assert "airflow_provider_kling/emulator/sample.mp4" in names
    assert wheel.getinfo("airflow_provider_kling/emulator/sample.mp4").file_size > 1000
    assert [n for n in names if n.startswith("tests/") or "/tests/" in n] == []
    assert {n.split("/")[0] for n in names} == {"airflow_provider_kling", _dist_info(wheel)}
    entry_points = wheel.read(f"{_dist_info(wheel)}/entry_points.txt").decode()
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = airflow_provider_kling:get_provider_info" in entry_points
