"""Run every benchmark (``make bench``): tables as they finish, a summary, exit 1 if a target failed.

Usage: ``python -m benchmarks.run [--only import,triggerer,download,polling,batch,manifest]
[--report FILE.md]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import PYTHON, ROOT, cache_bytecode, machine_line, render_markdown

BENCHMARKS = ("import", "triggerer", "download", "polling", "batch", "manifest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset to run")
    parser.add_argument("--report", default=None, help="also write the tables as Markdown to this file")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")

    cache_bytecode()  # one bytecode cache for every benchmark's processes
    print(machine_line(), flush=True)
    outcomes: list[tuple[str, str, float]] = []
    sections = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        for name in names:
            print(f"\n>>> benchmarks.bench_{name}", flush=True)
            out = Path(tmp) / f"{name}.json"
            began = time.monotonic()
            proc = subprocess.run(
                [PYTHON, "-m", f"benchmarks.bench_{name}", "--json", str(out)], cwd=ROOT, check=False
            )
            elapsed = time.monotonic() - began
            if out.exists():
                sections.append(render_markdown(json.loads(out.read_text())))
                verdict = "PASS" if proc.returncode == 0 else "FAIL"
            else:
                verdict = f"ERROR (exit {proc.returncode})"
            outcomes.append((name, verdict, elapsed))

    print("\n== summary ==")
    for name, verdict, elapsed in outcomes:
        print(f"{name:<10} {verdict:<18} {elapsed:6.0f} s")
    print(f"total {time.monotonic() - started:.0f} s; {machine_line()}")
    if args.report:
        Path(args.report).write_text(f"{machine_line()}\n\n" + "\n".join(sections))
        print(f"Markdown tables written to {args.report}")
    return 0 if all(verdict == "PASS" for _, verdict, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
