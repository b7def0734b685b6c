"""DAG-parse cost: what importing an operator module adds once Airflow's BaseOperator is loaded.

Each run is a fresh interpreter that imports ``airflow.sdk.BaseOperator`` first and then times, in
process with ``time.perf_counter``, the import of the operator module alone (the whole-process wall
time is dominated by Airflow itself, seconds on a small machine). Ours runs interleaved with the HTTP
and dbt Cloud providers' operator modules when those are installed (``pip install -e ".[bench]"``).
One extra ``-X importtime`` run lists the modules ours pulls in, slowest first.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from benchmarks.common import PYTHON, ROOT, Result, Row, airflow_home, cache_bytecode, finish

TARGET_MS = 20.0
#: (name, module, distribution that provides it, or None for ours)
CANDIDATES: tuple[tuple[str, str, str | None], ...] = (
    ("ours", "airflow_provider_kling.operators.kling", None),
    ("http", "airflow.providers.http.operators.http", "apache-airflow-providers-http"),
    ("dbt-cloud", "airflow.providers.dbt.cloud.operators.dbt", "apache-airflow-providers-dbt-cloud"),
)
HTTP_CLIENTS = ("requests", "urllib3", "aiohttp", "httpx", "tenacity")
MARKER = "---- kling-bench: import of "

# One fresh interpreter per round: it imports BaseOperator, then forks one child per candidate, so
# each candidate's import starts from the same state a fresh interpreter has after that import.
ROUND = f"""
import importlib, json, os, sys, time
from airflow.sdk import BaseOperator
results = {{}}
for module in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        before = set(sys.modules)
        sys.stderr.write({MARKER!r} + module + "\\n"); sys.stderr.flush()
        start = time.perf_counter()
        try:
            importlib.import_module(module)
            seconds = time.perf_counter() - start
            added = set(sys.modules) - before
            data = {{
                "seconds": seconds,
                "modules": len(added),
                "http_clients": sorted(m for m in {HTTP_CLIENTS!r} if m in added),
            }}
        except BaseException as exc:
            data = {{"error": repr(exc)}}
        sys.stderr.flush()
        os.write(w, json.dumps(data).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    results[module] = json.loads(payload)
print(json.dumps(results))
"""


def _installed(dist: str | None) -> bool:
    if dist is None:
        return True
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _env() -> dict[str, str]:
    env = os.environ.copy()
    env["AIRFLOW_HOME"] = airflow_home()
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return env


def _round(modules: list[str], *flags: str) -> tuple[dict[str, dict[str, Any]], str]:
    """One fresh interpreter: BaseOperator, then each module in its own fork."""
    proc = subprocess.run(
        [PYTHON, *flags, "-c", ROUND, *modules],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"import round failed:\n{proc.stderr[-3000:]}")
    results: dict[str, dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    for module, data in results.items():
        if "error" in data:
            raise RuntimeError(f"importing {module} failed: {data['error']}")
    return results, proc.stderr


def _slowest_imports(stderr: str, module: str, top: int = 6) -> list[str]:
    """Parse ``-X importtime`` output of one module's fork: the modules with the most self time."""
    section = stderr.split(MARKER + module + "\n", 1)[-1].split(MARKER, 1)[0]
    entries = []
    for line in section.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        entries.append((int(self_us), name))
    entries.sort(reverse=True)
    return [f"{name} {us / 1000:.1f} ms" for us, name in entries[:top]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_IMPORT_RUNS", "10")))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    cache_bytecode()
    candidates = [(name, mod) for name, mod, dist in CANDIDATES if _installed(dist)]
    names = {mod: name for name, mod in candidates}
    modules = [mod for _, mod in candidates]
    notes = []
    missing = [name for name, _m, dist in CANDIDATES if not _installed(dist)]
    if missing:
        # A comparison without its baselines is no measurement: report it as a failure, not a pass.
        notes.append(
            f"FAILED: baselines not installed, so not measured: {', '.join(missing)} "
            "(pip install -e '.[bench]')"
        )
    # A warm-up round fills the bytecode cache and writes airflow.cfg; it is not counted.
    _round(modules)
    times: dict[str, list[float]] = {name: [] for name, _ in candidates}
    info: dict[str, dict[str, Any]] = {}
    for i in range(args.runs):
        order = modules[i % len(modules) :] + modules[: i % len(modules)]  # no candidate always goes first
        results, _ = _round(order)
        for module, data in results.items():
            times[names[module]].append(float(data["seconds"]) * 1000)
            info[names[module]] = data
        print(
            f"  round {i + 1}/{args.runs}: " + ", ".join(f"{n} {t[-1]:.1f} ms" for n, t in times.items()),
            flush=True,
        )
    _, importtime = _round([CANDIDATES[0][1]], "-X", "importtime")

    med = {name: statistics.median(values) for name, values in times.items()}
    baselines = {name: med[name] for name in med if name != "ours"}
    ours_clients = info["ours"]["http_clients"]
    rows = [
        Row(
            f"operator import, median of {args.runs}",
            "ms",
            med["ours"],
            baselines,
            target=f"<= {TARGET_MS:.0f} ms",
            passed=med["ours"] <= TARGET_MS,
        ),
        Row("operator import, slowest run", "ms", max(times["ours"]), {n: max(times[n]) for n in baselines}),
        Row("modules added", "", info["ours"]["modules"], {n: info[n]["modules"] for n in baselines}),
        Row(
            "HTTP client modules added",
            "",
            float(len(ours_clients)),
            {n: float(len(info[n]["http_clients"])) for n in baselines},
            target="0",
            passed=not ours_clients,
            show_ratio=False,
        ),
    ]
    clients = "; ".join(f"{n}: {', '.join(info[n]['http_clients']) or 'none'}" for n in baselines)
    notes.append(f"HTTP client modules the baselines add: {clients}")
    slowest = ", ".join(_slowest_imports(importtime, CANDIDATES[0][1]))
    notes.append(f"slowest modules ours adds (-X importtime, self time): {slowest}")
    result = Result(
        "import",
        "1. DAG-parse cost: operator module import after BaseOperator (fresh interpreter each round)",
        list(baselines),
        rows,
        notes,
    )
    status = finish(result, args.json)
    return 1 if missing else status


if __name__ == "__main__":
    sys.exit(main())
