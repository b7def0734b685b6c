#!/usr/bin/env bash
# Install Debian's PostgreSQL server and Redis for the distributed deployment tests
# (tests/support/deployment_distributed.py), if they are not there yet. Idempotent and quiet: does nothing when
# initdb, postgres and redis-server exist. Needs root (or sudo) and Debian's package registry.
# The packages' own services are not used: the tests start private instances on free loopback ports.
set -euo pipefail

have_postgres() {
    compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null && compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_postgres && command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
# Serialise with other apt users on the machine instead of failing on the dpkg lock.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
# policy-rc.d 101: the packages' postinst must not start system-wide services (no init system here,
# and the tests never use them).
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=""
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    ADDED_POLICY=1
fi
LOG="$(mktemp)"
trap 'if [ -n "$ADDED_POLICY" ]; then $SUDO rm -f "$POLICY"; fi; rm -f "$LOG"' EXIT
if ! $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends postgresql redis-server \
        >"$LOG" 2>&1; then
    cat "$LOG" >&2
    exit 1
fi
have_postgres
command -v redis-server >/dev/null
