#!/usr/bin/env bash
# `make demo`: run example_dags/example_kling_basic.py end to end and print the path of the MP4.
#
# Without KLING_API_KEY it starts the bundled Kling emulator on a free local port (stopped again on
# exit) and points the kling_default connection at it. With KLING_API_KEY it calls the real service
# (https://api.apilaplas.com, or KLING_BASE_URL) with that key and the image at KLING_IMAGE_URL
# (default: the DAG's), which takes a few minutes and spends credits.
#
# Everything lives under .demo/: AIRFLOW_HOME with its SQLite DB, the logs and the videos.
# The key is only ever passed through the environment, never printed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/.venv/bin}"
PY="$BIN/python"
DEMO="$ROOT/.demo"

export AIRFLOW_HOME="$DEMO/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/example_dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export KLING_DOWNLOAD_DIR="$DEMO/videos"
mkdir -p "$AIRFLOW_HOME" "$KLING_DOWNLOAD_DIR"

say() { printf '==> %s\n' "$*"; }

EMULATOR_PID=""
cleanup() {
    if [[ -n "$EMULATOR_PID" ]] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
        kill "$EMULATOR_PID" 2>/dev/null || true
        wait "$EMULATOR_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The connection is built by Python from the environment, so the key never appears on a command line.
# With a second argument "loopback" it also lets videos be downloaded from loopback hosts over plain
# http (the connection extra allow_loopback_downloads), which only the local emulator needs.
connection_json() {
    "$PY" - "$1" "${2:-}" <<'EOF'
import json, os, sys
conn = {"conn_type": "kling", "host": sys.argv[1], "password": os.environ["KLING_CONNECTION_KEY"]}
if sys.argv[2] == "loopback":
    conn["extra"] = {"allow_loopback_downloads": True}
print(json.dumps(conn))
EOF
}

if [[ -n "${KLING_API_KEY:-}" ]]; then
    BASE_URL="${KLING_BASE_URL:-https://api.apilaplas.com}"
    DOWNLOADS=""
    say "Using the real Kling service at $BASE_URL (KLING_API_KEY is set; this spends credits)"
    export KLING_CONNECTION_KEY="$KLING_API_KEY"
    # Production pacing from the DAG's defaults unless overridden; a 5 s clip takes 4-5 minutes.
    export KLING_POLL_INTERVAL="${KLING_POLL_INTERVAL:-10}"
else
    # A fresh random key per run: the emulator accepts only it.
    KLING_EMULATOR_API_KEY="$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
    export KLING_EMULATOR_API_KEY KLING_CONNECTION_KEY="$KLING_EMULATOR_API_KEY"
    EMULATOR_LOG="$DEMO/emulator.log"
    # Port 0: the OS picks a free port and the emulator prints the URL it got.
    "$PY" -m airflow_provider_kling.emulator --port 0 --generation-seconds 5 >"$EMULATOR_LOG" 2>&1 &
    EMULATOR_PID=$!
    BASE_URL=""
    for _ in $(seq 1 150); do
        BASE_URL="$(sed -n 's/^Kling emulator listening on \(http[^ ]*\).*/\1/p' "$EMULATOR_LOG")"
        [[ -n "$BASE_URL" ]] && break
        kill -0 "$EMULATOR_PID" 2>/dev/null || break
        sleep 0.2
    done
    if [[ -z "$BASE_URL" ]]; then
        echo "The emulator did not start; its output:" >&2
        cat "$EMULATOR_LOG" >&2
        exit 1
    fi
    say "Kling emulator listening on $BASE_URL (generations take 5 s)"
    export KLING_POLL_INTERVAL="${KLING_POLL_INTERVAL:-1}"
    # The emulator serves its videos over http from 127.0.0.1: allowed for this connection only.
    DOWNLOADS="loopback"
fi
AIRFLOW_CONN_KLING_DEFAULT="$(connection_json "$BASE_URL" "$DOWNLOADS")"
export AIRFLOW_CONN_KLING_DEFAULT

say "Preparing the metadata DB in ${AIRFLOW_HOME#"$ROOT"/} (SQLite)"
if ! "$BIN/airflow" db migrate >"$DEMO/db-migrate.log" 2>&1; then
    tail -n 30 "$DEMO/db-migrate.log" >&2
    exit 1
fi

MARKER="$DEMO/.run-started"
touch "$MARKER"
sleep 1  # the video must be strictly newer than the marker
RUN_LOG="$DEMO/dags-test.log"
say "Running: airflow dags test example_kling_basic (log: ${RUN_LOG#"$ROOT"/})"
if ! "$BIN/airflow" dags test example_kling_basic >"$RUN_LOG" 2>&1; then
    echo "The DAG run failed; the end of its log:" >&2
    tail -n 40 "$RUN_LOG" >&2
    exit 1
fi
grep -o 'Kling generation .*\(submitted\|is [a-z]* after [0-9.]* s\|completed: [^ ]*\)' "$RUN_LOG" |
    sed 's/^/    /' || true

VIDEO="$(find "$KLING_DOWNLOAD_DIR" -name '*.mp4' -newer "$MARKER" -printf '%T@ %p\n' | sort -n | tail -n 1 |
    cut -d' ' -f2-)"
if [[ -z "$VIDEO" ]]; then
    echo "The run succeeded but no MP4 appeared under $KLING_DOWNLOAD_DIR" >&2
    exit 1
fi

# Playable: ffprobe must read it as MP4 with a duration; without ffprobe, the file must open with
# an MP4 'ftyp' box.
if command -v ffprobe >/dev/null 2>&1; then
    if ! INFO="$(ffprobe -v error -show_entries format=format_name,duration -of default=nw=1 "$VIDEO")"; then
        echo "ffprobe cannot read $VIDEO" >&2
        exit 1
    fi
    if ! grep -q 'format_name=.*mp4' <<<"$INFO"; then
        echo "$VIDEO is not an MP4: $INFO" >&2
        exit 1
    fi
    say "ffprobe: $(tr '\n' ' ' <<<"$INFO")"
else
    "$PY" - "$VIDEO" <<'EOF'
import sys
with open(sys.argv[1], "rb") as f:
    head = f.read(12)
if len(head) < 12 or head[4:8] != b"ftyp":
    sys.exit(f"{sys.argv[1]} does not start with an MP4 'ftyp' box")
print(f"==> MP4 'ftyp' box found (brand {head[8:12].decode('ascii', 'replace')}); ffprobe not installed")
EOF
fi
say "Downloaded $(stat -c %s "$VIDEO") bytes; the video:"
echo "$VIDEO"
