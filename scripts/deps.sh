#!/usr/bin/env bash
# Installs the Debian packages messenger needs to build, run and test, when
# they are missing. Safe to run again: it does nothing when all are there.
set -euo pipefail

PKGS=(build-essential pkg-config libmicrohttpd-dev liblmdb-dev libjansson-dev libssl-dev
      libcmocka-dev python3 curl)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# pytest drives the black-box HTTP tests.
if ! python3 -c 'import pytest' 2>/dev/null; then
    echo "deps: installing pytest" >&2
    python3 -m pip install -q pytest >&2 || {
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pytest >&2
    }
fi
