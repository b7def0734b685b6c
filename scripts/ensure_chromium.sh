#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the UI browser test, if they are not there yet.
# Idempotent: does nothing when both binaries exist. Needs root (or sudo) and Debian's package registry.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
# Serialise with other apt users on the machine instead of failing on the dpkg lock.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium >/dev/null
command -v chromedriver >/dev/null
