"""Catalog-scale manifests: 100,000 rows validated against the catalog as they stream, beside a plain
``json.loads`` loop over the same file.

Each side runs in its own fresh interpreter (``--child``), so each peak RSS is its own: the child
reads its resident set before the pass, resets the kernel's high-water mark (``/proc/self/clear_refs``),
makes one pass over the file and reads the high-water mark again (``/proc/self/status`` VmHWM, else
``resource.getrusage``). The validating child first validates a 50-row file, so the catalog and
pydantic's validators are loaded before the measured pass, as in a batch task.

- ``validate_manifest``: :func:`airflow_provider_kling.batch.validation.validate_manifest` (every row
  built into a catalog request, keys checked for duplicates, the content hashed);
- ``json.loads loop``: ``for line in file: json.loads(line)`` and nothing else;
- ``resume check``: :func:`~airflow_provider_kling.batch.validation.unchanged_check` on the unchanged
  file, what a resumption does instead of validating again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Result, Row, current_rss, finish, peak_rss, reset_peak_rss, run_child

MODEL = "kling-video/v1/standard/image-to-video"
#: Targets: throughput on a shared 2-core machine, and peak RSS growth while 100,000 rows validate.
MIN_ROWS_PER_S = 2_000
MAX_GROWTH_MB = 64


def _write(path: Path, n: int, tag: str) -> None:
    with path.open("w") as out:
        for i in range(n):
            row = {
                "key": f"{tag}-{i:06d}",
                "image_url": "https://images.example.org/catalog/sku.png",
                "prompt": f"{tag} {i}: the product turns slowly on a white table",
                "duration": 5,
            }
            out.write(json.dumps(row) + "\n")


def _child(side: str, manifest: str, warm: str, out: str) -> None:
    if side == "validate":
        from airflow_provider_kling.batch.validation import settings_hash, unchanged_check, validate_manifest

        def check(path: str) -> Any:
            return validate_manifest(
                path, model=MODEL, parameters=None, key_field="key", check_capabilities=True
            )

        check(warm)
    before = current_rss()
    reset_peak_rss()
    started = time.perf_counter()
    rows = 0
    if side == "validate":
        result = check(manifest)
        rows = result.rows
    else:
        with open(manifest, "rb") as handle:
            for line in handle:
                json.loads(line)
                rows += 1
    elapsed = time.perf_counter() - started
    found: dict[str, Any] = {"rows": rows, "seconds": elapsed, "before": before, "peak": peak_rss()}
    if side == "validate":
        record = result.record()
        began = time.perf_counter()
        same = unchanged_check(manifest, record, settings_hash(MODEL, None, "key", True))
        found["resume_seconds"] = time.perf_counter() - began
        found["resume_skips"] = same is not None
    Path(out).write_text(json.dumps(found))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_MANIFEST_N", "100000")))
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.manifest, args.warm, args.out)
        return 0

    with tempfile.TemporaryDirectory(prefix="kling-bench-manifest-") as tmp:
        manifest, warm = Path(tmp) / "manifest.jsonl", Path(tmp) / "warm.jsonl"
        _write(manifest, args.n, "sku")
        _write(warm, 50, "warm")
        size = manifest.stat().st_size
        measured = {}
        for side in ("validate", "baseline"):
            measured[side] = run_child(
                "benchmarks.bench_manifest",
                [side, "--manifest", str(manifest), "--warm", str(warm)],
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
                },
                timeout=1800,
            )
            data = measured[side]
            peak, grown = data["peak"] / 2**20, (data["peak"] - data["before"]) / 2**20
            print(
                f"  {side}: {data['rows']} rows in {data['seconds']:.1f} s, "
                f"peak RSS {peak:.0f} MB (+{grown:.1f} MB)",
                flush=True,
            )
    return finish(_result(measured, args.n, size), args.json)


def _result(measured: dict[str, dict[str, Any]], n: int, size: int) -> Result:
    ours, base = measured["validate"], measured["baseline"]
    rate = ours["rows"] / ours["seconds"]
    base_rate = base["rows"] / base["seconds"]
    growth = (ours["peak"] - ours["before"]) / 2**20
    base_growth = (base["peak"] - base["before"]) / 2**20
    baseline = "json.loads loop"
    rows = [
        Row("rows validated", "", ours["rows"], {baseline: base["rows"]}, f"= {n}", ours["rows"] == n,
            show_ratio=False),
        Row("throughput", "rows/s", rate, {baseline: base_rate}, f">= {MIN_ROWS_PER_S:,}",
            rate >= MIN_ROWS_PER_S),
        Row("peak RSS growth during the pass", "MB", growth, {baseline: base_growth},
            f"<= {MAX_GROWTH_MB} MB", growth <= MAX_GROWTH_MB),
        Row("peak RSS of the process", "MB", ours["peak"] / 2**20, {baseline: base["peak"] / 2**20}),
        Row("resume of the unchanged manifest", "ms", ours["resume_seconds"] * 1000, {},
            "validates nothing", bool(ours["resume_skips"]), show_ratio=False),
    ]  # fmt: skip
    notes = [
        f"{n:,} JSONL rows ({size / 2**20:.1f} MB) of {MODEL} (image URL, prompt, duration); each side in "
        "its own fresh interpreter, one after the other in the same run",
        "the validating process holds the catalog, pydantic and the provider (its absolute peak says "
        "so); its growth is the row keys (kept for the duplicate check) and the allocator's working set",
    ]
    return Result("manifest", f"6. A {n:,}-row manifest validated as it streams", [baseline], rows, notes)


if __name__ == "__main__":
    sys.exit(main())
