"""Shared plumbing for the benchmarks: result tables, machine facts, the emulator process, memory probes.

Every benchmark prints one table (metric, ours, baselines, ratio, target, PASS/FAIL) and can write it
as JSON (``--json PATH``) for :mod:`benchmarks.run` to summarise.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
#: The emulator's key in every benchmark; never a real one.
API_KEY = "kling-bench-key-5c1e0d"
API_PATH = "/v2/generate/video/kling/generation"
MODEL = "kling-video/v1/standard/image-to-video"


@dataclass
class Row:
    """One line of a result table.

    :param metric: what is measured.
    :param unit: unit of ``ours`` and the baselines.
    :param ours: the provider's figure.
    :param baselines: baseline name -> figure (None when that baseline could not run).
    :param target: the target, as text.
    :param passed: True/False against the target; None for figures shown for information.
    :param ratio: ours / first baseline unless given.
    :param show_ratio: False where a ratio means nothing (counts that must be equal, pass/fail checks).
    """

    metric: str
    unit: str
    ours: float | None
    baselines: dict[str, float | None] = field(default_factory=dict)
    target: str = ""
    passed: bool | None = None
    ratio: float | None = None

    show_ratio: bool = True

    def __post_init__(self) -> None:
        if not self.show_ratio:
            self.ratio = None
        elif self.ratio is None and self.ours is not None and self.baselines:
            first = next(iter(self.baselines.values()))
            if first:
                self.ratio = self.ours / first


def fmt(value: float | None, unit: str) -> str:
    """A figure with its unit, at a precision that suits its size."""
    if value is None:
        return "n/a"
    if unit in ("", "x") or value >= 100 or float(value).is_integer():
        text = f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.2f}"
    elif value >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if value < 1 else f"{value:.2f}"
    return f"{text} {unit}".strip()


def fmt_ratio(value: float) -> str:
    """A ratio with enough digits that one just over a target does not print as equal to it."""
    return f"{value:.3f}x" if value < 10 else f"{value:.0f}x"


def render_table(title: str, rows: Sequence[Row], baseline_names: Sequence[str]) -> str:
    """Render rows as a plain-text table."""
    head = ["metric", "ours", *baseline_names, "ratio", "target", "result"]
    lines = []
    for row in rows:
        result = "info" if row.passed is None else ("PASS" if row.passed else "FAIL")
        ratio = "" if row.ratio is None else fmt_ratio(row.ratio)
        lines.append(
            [
                row.metric,
                fmt(row.ours, row.unit),
                *(fmt(row.baselines[n], row.unit) if n in row.baselines else "" for n in baseline_names),
                ratio,
                row.target,
                result,
            ]
        )
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines, strict=True)]
    out = [f"== {title} ==", "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(out)


def render_markdown(data: dict[str, Any]) -> str:
    """A Result's JSON form as a Markdown section (for PERFORMANCE.md)."""
    names = data["baseline_names"]
    head = ["metric", "ours", *names, "ratio", "target", "result"]
    lines = [f"### {data['title']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in data["rows"]:
        result = "info" if row["passed"] is None else ("PASS" if row["passed"] else "FAIL")
        ratio = "" if row["ratio"] is None else fmt_ratio(row["ratio"])
        cells = [
            row["metric"].strip(),
            fmt(row["ours"], row["unit"]),
            *(fmt(row["baselines"][n], row["unit"]) if n in row["baselines"] else "" for n in names),
            ratio,
            row["target"],
            result,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.extend(f"\n{note}" for note in data["notes"])
    return "\n".join(lines) + "\n"


@dataclass
class Result:
    """A benchmark's outcome: its table plus free-form notes."""

    name: str
    title: str
    baseline_names: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(row.passed is False for row in self.rows)

    def render(self) -> str:
        text = render_table(self.title, self.rows, self.baseline_names)
        if self.notes:
            text += "\n" + "\n".join(f"  note: {n}" for n in self.notes)
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "baseline_names": self.baseline_names,
            "rows": [asdict(r) for r in self.rows],
            "notes": self.notes,
            "failed": self.failed,
            "machine": machine_info(),
        }


def finish(result: Result, json_path: str | None) -> int:
    """Print the table, write JSON when asked, and return the exit status (1 when a target failed)."""
    print(result.render(), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_json(), indent=2))
    return 1 if result.failed else 0


# ------------------------------------------------------------------------------------ machine
def machine_info() -> dict[str, Any]:
    """The facts a reader needs to compare figures across machines."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem_gb,
        "loadavg": [round(x, 2) for x in load] if load else None,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def machine_line() -> str:
    """One line describing the machine and how loaded it is right now."""
    m = machine_info()
    load = " ".join(str(x) for x in m["loadavg"]) if m["loadavg"] else "?"
    return (
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB RAM, {m['system']}, "
        f"Python {m['python']}; load average {load}"
    )


# ------------------------------------------------------------------------------------ memory
def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_kb(key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def current_rss() -> int:
    """This process's resident set size in bytes."""
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """This process's peak resident set size in bytes (since start or the last :func:`reset_peak_rss`)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)


def raise_nofile_limit() -> None:
    """Lift the open-files soft limit to the hard limit (1,000 pollers need more than 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ------------------------------------------------------------------------------------ emulator
@dataclass
class EmulatorProcess:
    """An emulator served by ``python -m airflow_provider_kling.emulator`` in its own process."""

    base_url: str
    proc: subprocess.Popen[str] | None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=60) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(
            self.base_url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        self.post("/_emulator/reset")

    def api_requests(self, method: str | None = None) -> list[dict[str, Any]]:
        """Recorded requests to the generation endpoint, oldest first."""
        return [
            r
            for r in self.get("/_emulator/requests")
            if r["path"] == API_PATH and (method is None or r["method"] == method)
        ]

    def cpu_seconds(self) -> float:
        import psutil

        assert self.proc is not None, "only for an emulator this process started"
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[EmulatorProcess]:
    """Start the emulator CLI on a free port; stop it on exit."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "airflow_provider_kling.emulator", "--port", "0", "--api-key", API_KEY, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        if not match:
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield EmulatorProcess(match.group(1), proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def connection_env(base_url: str, *, allow_loopback_downloads: bool = False) -> dict[str, str]:
    """Environment for a process that uses kling_default against the emulator, away from ~/airflow.

    :param base_url: the emulator's base URL.
    :param allow_loopback_downloads: set the connection extra that lets the hook download videos
        from a loopback host: the emulator's, served over plain http on 127.0.0.1.
    """
    env = os.environ.copy()
    env["AIRFLOW_HOME"] = airflow_home()
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    conn: dict[str, Any] = {"conn_type": "kling", "host": base_url, "password": API_KEY}
    if allow_loopback_downloads:
        conn["extra"] = {"allow_loopback_downloads": True}
    env["AIRFLOW_CONN_KLING_DEFAULT"] = json.dumps(conn)
    return env


_HOME: list[str] = []


def airflow_home() -> str:
    """A private AIRFLOW_HOME for this benchmark run (removed at exit)."""
    if not _HOME:
        path = tempfile.mkdtemp(prefix="kling-bench-home-")
        import atexit

        atexit.register(shutil.rmtree, path, True)
        _HOME.append(path)
    return _HOME[0]


def cache_bytecode() -> None:
    """Let child interpreters cache bytecode, as every deployment does, in a private folder.

    With ``PYTHONDONTWRITEBYTECODE`` set, every fresh interpreter compiles Airflow and the provider from
    source again, and import timings measure the compiler rather than the import.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if not os.environ.get("PYTHONPYCACHEPREFIX"):
        os.environ["PYTHONPYCACHEPREFIX"] = str(Path(airflow_home()) / "pycache")


def run_child(
    module: str, args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600
) -> Any:
    """Run ``python -m module --child args --out FILE`` and return the JSON it wrote."""
    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        out = Path(tmp) / "out.json"
        log = Path(tmp) / "child.log"
        with open(log, "w") as log_file:
            proc = subprocess.run(
                [PYTHON, "-m", module, "--child", *args, "--out", str(out)],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if proc.returncode != 0 or not out.exists():
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"{module} child failed ({proc.returncode}):\n{tail}")
        return json.loads(out.read_text())
