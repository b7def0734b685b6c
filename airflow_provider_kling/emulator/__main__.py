"""Command line entry point: ``python -m airflow_provider_kling.emulator --port 8642``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import textwrap

from airflow_provider_kling.emulator.account import RETENTIONS
from airflow_provider_kling.emulator.constants import (
    ACCOUNT_SWITCHES,
    ANSWER_STYLES,
    API_PATH,
    ID_KEYS,
    ID_STYLES,
    STATUS_STYLES,
    UNIFIED_PATH,
    USAGE_STYLES,
)
from airflow_provider_kling.emulator.faults import FAULT_HELP
from airflow_provider_kling.emulator.server import KlingEmulator

_EPILOG = """\
endpoints (same protocol, auth, faults and recording on both):
  legacy:  POST {legacy}, GET {legacy}?generation_id=ID
  unified: POST {unified}, GET {unified}?generation_id=ID
  Bodies are checked against airflow_provider_kling.catalog: an unknown field for a known model
  ("Body validation error: Unrecognized key(s) ..."), a missing required field ("<field>: Required"),
  a retired model ("Model ... is no longer supported"), prompt/image_url types and duration (legacy
  endpoint + seed models: "5"/"10" and static_mask_url, dynamic_masks[].mask_url; otherwise an integer
  in the model's range and static_mask, mask). A model id the catalog does not know passes as it is.
  A generation can be polled on either endpoint.

account side (shapes of AIML's documentation; prices are the emulator's own, see emulator.pricing):
  GET /v1/models?include=pricing[&id=ID]   the priced catalogue (no key), ETag / 304 on If-None-Match
  GET /model/ID?include=pricing            one model, {{"object": "model", "data": ...}}, or 404
  GET /v2/usage?period=24h | start=&end=   the key's spend and charged requests (at most 92 days)
  GET /v2/logs?period=24h&model=&status=&limit=&offset=
                                           one row per submit, newest first (200 requests / 60 s)
  Every answer carries x-inference-id (the generation id on submit and poll) and echoes a valid
  X-Client-Request-Id (1-128 of A-Z a-z 0-9 . _ : -; an invalid one is dropped); JSON answers carry
  x-aimlapi-credits-used and x-aimlapi-usd-spent (1 USD = 2,000,000 credits; a failed generation 0).

prompt markers (in prompt, or in the first multi_prompt entry when there is no prompt):
  [error]         the generation ends with status error and {{"detail": [{{"loc": ["body",
                  "image_url"], "msg": "Could not detect face in the image", ...}}]}}
  [error:2026]    status error with {{"name": "ContentPolicyViolation", "message": ...}}
  [seconds:N]     this generation takes N seconds instead of its share of --generation-seconds

videos (with PyAV, the emulator extra; else the stock sample MP4 for every request):
  a clip of the requested duration (3..15 s; multi_prompt shots add up), aspect ratio (aspect_ratio,
  or a data-URI input image's, else 16:9), a 720p or 1080p class per model scaled down by 5 at 8 fps,
  and a quiet AAC tone where the model makes (generate_audio), is given (avatar) or keeps (keep_audio)
  sound; encoded once and cached in $KLING_EMULATOR_CLIP_CACHE (default ~/.cache/airflow-provider-kling)

fault kinds (POST /_emulator/faults {{"kind": K, "times": 1, "method": "GET", "path_prefix": P,
  "retry_after": 2, "delay": 0.5, "size": N, "after_create": false}}; without path_prefix a fault hits
  the API endpoints only, use "/_emulator/videos" for downloads):
{faults}

control API (no auth):
  GET  /_emulator/health                       {{"ok": true}}
  GET  /_emulator/counts                       API requests per method: {{"POST": 1, "GET": 4}}
  GET  /_emulator/requests                     every recorded request (never the key), with its
                                               path, endpoint, fault, status and scripted flag
  GET  /_emulator/generations                  every generation's state
  POST /_emulator/generations/ID/complete      finish generation ID now (percent-encode the id)
  POST /_emulator/reset                        forget requests, generations, faults and scripts
  GET  /_emulator/faults                       pending faults, counts, random-fault settings
  POST /_emulator/faults                       queue a fault (see above)
  POST /_emulator/fault-rate                   {{"rate": 0.2, "kinds": ["502", {{"kind": "429",
                                               "retry_after": 1, "method": "POST"}}], "seed": 1,
                                               "methods": ["GET"]}}: random faults on API requests
  GET  /_emulator/account                      the account settings
  POST /_emulator/account                      {{"disabled": {{"logs": 404, "models": 405}} or ["usage"],
                                               "logs_delay": 5, "usage_delay": 0, "spending_limit":
                                               1.5, "spending_retention": "day", "logs_rate_limit":
                                               200, "logs_rate_window": 60}}: change them (reset
                                               returns to the command line's)
  GET  /_emulator/script                       pending scripted answers
  POST /_emulator/script                       {{"method": "GET", "path_prefix": P, "times": 1,
                                               "status": 200, "headers": {{...}}, "body": <JSON>}}
                                               (or "body_text" / "body_base64" for raw bytes): the
                                               next matching answers are exactly this, nothing else
                                               happens (no auth, no generation, no fault)
  GET  /_emulator/videos/TOKEN/output.mp4      a finished video (Range supported)
  GET  /_emulator/blob/N                       N pattern bytes (see blob_bytes)
  GET  /_emulator/redirect?to=URL[&hops=N][&status=302]
                                               redirect to any URL; hops>1 chains N redirects
"""


def _epilog() -> str:
    faults = "\n".join(
        textwrap.fill(
            text, 100, initial_indent=f"  {kind:<14}", subsequent_indent=" " * 16, break_on_hyphens=False
        )
        for kind, text in sorted(FAULT_HELP.items())
    )
    return _EPILOG.format(legacy=API_PATH, unified=UNIFIED_PATH, faults=faults)


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_kling.emulator",
        description="Serve a local emulator of the Apilaplas/AIML Kling video API.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8642)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("KLING_EMULATOR_API_KEY", "emulator-key"),
        help="accepted bearer key (default: $KLING_EMULATOR_API_KEY or 'emulator-key')",
    )
    parser.add_argument(
        "--generation-seconds",
        type=float,
        default=20.0,
        help="time to finish a 5 s clip of a reference model; other models and lengths in proportion "
        "to their documented times; queued for the first 10%%",
    )
    parser.add_argument(
        "--status-style",
        choices=sorted(STATUS_STYLES),
        default="documented",
        help="documented: queued/generating/completed/error; alternate: waiting/processing/succeeded/failed",
    )
    parser.add_argument(
        "--answer-style",
        choices=ANSWER_STYLES,
        default="2025",
        help="2025: uuid ids, tokens_used, full video object; 2026: 21-character ids, "
        "credits_used + usd_spent, video with only a signed url (omni models: a list in both)",
    )
    parser.add_argument(
        "--id-style",
        choices=ID_STYLES,
        default=None,
        help="uuid '<uuid>:<model>', short 'gen_ab12cd34', opaque 21 characters, numeric Kling task id "
        "(default: uuid, opaque with --answer-style 2026)",
    )
    parser.add_argument("--id-key", choices=ID_KEYS, default="id", help="key of the id in the POST answer")
    parser.add_argument(
        "--usage-style",
        choices=USAGE_STYLES,
        default="tokens",
        help="2025 usage: tokens_used, or credits_used + usd_spent",
    )
    parser.add_argument("--video-bytes", type=int, default=None, help="serve an N-byte blob as the video")
    parser.add_argument(
        "--account-off",
        action="append",
        default=[],
        choices=ACCOUNT_SWITCHES,
        help="turn an account route (404) or header off; repeat for several",
    )
    parser.add_argument(
        "--logs-delay", type=float, default=0.0, help="seconds before a submit's row shows in /v2/logs"
    )
    parser.add_argument(
        "--usage-delay", type=float, default=0.0, help="seconds before a charge shows in /v2/usage"
    )
    parser.add_argument(
        "--spending-limit", type=float, default=None, help="the key's spending limit in USD (403 beyond)"
    )
    parser.add_argument(
        "--spending-retention",
        choices=RETENTIONS,
        default="no_reset",
        help="when the spending limit starts again (UTC)",
    )
    parser.add_argument(
        "--logs-rate-limit", type=int, default=200, help="/v2/logs requests per 60 seconds (429 beyond)"
    )
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
        answer_style=args.answer_style,
        account={
            "disabled": args.account_off,
            "logs_delay": args.logs_delay,
            "usage_delay": args.usage_delay,
            "spending_limit": args.spending_limit,
            "spending_retention": args.spending_retention,
            "logs_rate_limit": args.logs_rate_limit,
        },
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(emulator))
    return 0


if __name__ == "__main__":
    sys.exit(main())
