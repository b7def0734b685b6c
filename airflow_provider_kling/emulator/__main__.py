"""Command line entry point: ``python -m airflow_provider_kling.emulator --port 8642``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from airflow_provider_kling.emulator.app import ID_KEYS, ID_STYLES, STATUS_STYLES, USAGE_STYLES, KlingEmulator


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_kling.emulator",
        description="Serve a local emulator of the Apilaplas Kling image-to-video API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8642)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("KLING_EMULATOR_API_KEY", "emulator-key"),
        help="accepted bearer key (default: $KLING_EMULATOR_API_KEY or 'emulator-key')",
    )
    parser.add_argument("--generation-seconds", type=float, default=20.0)
    parser.add_argument("--status-style", choices=sorted(STATUS_STYLES), default="documented")
    parser.add_argument("--id-style", choices=ID_STYLES, default="uuid")
    parser.add_argument("--id-key", choices=ID_KEYS, default="id")
    parser.add_argument("--usage-style", choices=USAGE_STYLES, default="tokens")
    parser.add_argument("--video-bytes", type=int, default=None, help="serve an N-byte blob as the video")
    parser.add_argument("--log-level", default="WARNING")
    return parser


async def _serve(emulator: KlingEmulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no loop signal handlers
            loop.add_signal_handler(sig, stop.set)
    base_url = await emulator.start_async()
    print(f"Kling emulator listening on {base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop_async()


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM.

    :param argv: arguments (default ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    emulator = KlingEmulator(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        generation_seconds=args.generation_seconds,
        status_style=args.status_style,
        id_style=args.id_style,
        id_key=args.id_key,
        usage_style=args.usage_style,
        video_bytes=args.video_bytes,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(emulator))
    return 0


if __name__ == "__main__":
    sys.exit(main())
