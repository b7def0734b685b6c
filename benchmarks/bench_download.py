"""Download: a 256 MB video from the emulator saved with ``KlingHook.download_video``, against curl.

The emulator (its own process) serves ``/_emulator/blob/{nbytes}``; ``curl -o`` and the hook download
the same URL into the same folder, alternating, a few rounds each. The hook runs in a child process
that measures its own wall time around the call and its peak RSS growth (Linux ``clear_refs`` resets
the peak right before); curl reports its own ``time_total``. Both files are checked byte for byte at
both ends and by size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Result,
    Row,
    connection_env,
    current_rss,
    emulator_process,
    finish,
    peak_rss,
    reset_peak_rss,
    run_child,
)

MB = 2**20
TARGET_RATIO = 0.8
TARGET_RSS_MB = 32.0


def _check_file(path: Path, nbytes: int) -> None:
    from airflow_provider_kling.emulator import blob_bytes

    size = path.stat().st_size
    if size != nbytes:
        raise RuntimeError(f"{path} has {size} bytes, expected {nbytes}")
    with open(path, "rb") as f:
        head = f.read(MB)
        f.seek(max(0, nbytes - MB))
        tail = f.read()
    if head != blob_bytes(0, len(head)) or tail != blob_bytes(max(0, nbytes - MB), len(tail)):
        raise RuntimeError(f"{path} does not hold the bytes the emulator served")


def _child(args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_kling.hooks.kling import KlingHook

    # kling_default (from the environment) allows loopback downloads: the emulator's video is on
    # 127.0.0.1. The key never goes to the video's host.
    hook = KlingHook()
    # Session and connection are read before the clock starts: only the download is timed.
    _ = hook.session
    _ = hook.endpoint
    gc.collect()
    reset_peak_rss()
    rss_before = current_rss()
    start = time.perf_counter()
    written = hook.download_video(args.url, args.dest, expected_size=args.nbytes, overwrite=True)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    _check_file(Path(written), args.nbytes)
    return {"seconds": seconds, "rss_before": rss_before, "rss_peak": peak}


def _default_folder(nbytes: int) -> str | None:
    """tmpfs when it has room: the disk's write-back would otherwise be the loudest noise in the figures."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 3 * nbytes:
        return str(shm)
    return None


def _curl(url: str, dest: Path, nbytes: int) -> tuple[float, int]:
    """Download with curl; return (its time_total, its peak RSS in bytes)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            ["curl", "-sS", "--fail", "-o", str(dest), "-w", "%{time_total}", url], stdout=out
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed ({proc.returncode})")
    _check_file(dest, nbytes)
    maxrss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return float(text.strip().replace(",", ".")), int(maxrss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_DOWNLOAD_ROUNDS", "5")))
    parser.add_argument(
        "--dir", default=None, help="folder to download into (default: /dev/shm if it has room)"
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dest", default="", help=argparse.SUPPRESS)
    parser.add_argument("--nbytes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        Path(args.out).write_text(json.dumps(_child(args)))
        return 0
    if shutil.which("curl") is None:
        print("curl is not installed: the download benchmark needs it as its baseline", file=sys.stderr)
        return 1

    nbytes = args.mb * MB
    ours: list[dict[str, Any]] = []
    curl: list[tuple[float, int]] = []
    folder = args.dir or _default_folder(nbytes)
    with emulator_process() as emu, tempfile.TemporaryDirectory(prefix="kling-bench-dl-", dir=folder) as tmp:
        url = f"{emu.base_url}/_emulator/blob/{nbytes}"
        env = connection_env(emu.base_url, allow_loopback_downloads=True)
        for i in range(args.rounds):
            # Alternate who goes first: the one that follows may meet the other's write-back.
            for who in ("curl", "ours") if i % 2 == 0 else ("ours", "curl"):
                dest = Path(tmp) / f"{who}.bin"
                if who == "curl":
                    curl.append(_curl(url, dest, nbytes))
                else:
                    child_args = ["--url", url, "--dest", str(dest), "--nbytes", str(nbytes)]
                    ours.append(run_child("benchmarks.bench_download", child_args, env=env))
                dest.unlink()
            print(
                f"  round {i + 1}/{args.rounds}: curl {args.mb / curl[-1][0]:.0f} MB/s, "
                f"ours {args.mb / ours[-1]['seconds']:.0f} MB/s ({curl[-1][0] / ours[-1]['seconds']:.2f}x)",
                flush=True,
            )

    ours_mbps = statistics.median(args.mb / r["seconds"] for r in ours)
    curl_mbps = statistics.median(args.mb / seconds for seconds, _ in curl)
    # Rounds run back to back in pairs: the median of the paired ratios shrugs off load that drifts
    # between rounds, which the ratio of the two medians would not.
    ratio = statistics.median(seconds / r["seconds"] for r, (seconds, _) in zip(ours, curl, strict=True))
    growth = max(max(0, r["rss_peak"] - r["rss_before"]) for r in ours) / MB
    rows = [
        Row(
            f"throughput, median of {args.rounds}",
            "MB/s",
            ours_mbps,
            {"curl": curl_mbps},
            f">= {TARGET_RATIO}x curl",
            ratio >= TARGET_RATIO,
            ratio,
        ),
        Row(
            "peak RSS growth during the download",
            "MB",
            growth,
            {"curl": max(rss for _, rss in curl) / MB},
            f"<= {TARGET_RSS_MB:.0f} MB",
            growth <= TARGET_RSS_MB,
        ),
    ]
    notes = [
        f"{args.mb} MB from the emulator (separate process) over loopback into "
        f"{folder or tempfile.gettempdir()}, curl and ours alternating; ratio: median of per-round ratios",
        "under RSS the curl column is curl's whole peak RSS, ours is the growth over the RSS before the call",
    ]
    title = f"3. Download: {args.mb} MB video to a local file"
    return finish(Result("download", title, ["curl"], rows, notes), args.json)


if __name__ == "__main__":
    sys.exit(main())
