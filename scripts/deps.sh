#!/usr/bin/env bash
# Installs the Debian packages messenger needs to build, run and test, when
# they are missing. Safe to run again: it does nothing when all are there.
set -euo pipefail

PKGS=(build-essential pkg-config libmicrohttpd-dev liblmdb-dev libjansson-dev libssl-dev
      libcmocka-dev libargon2-dev libhiredis-dev zlib1g-dev python3 curl clang)
# clang: libFuzzer harnesses (tests/fuzz). Tests: Redis (the event broker between API instances), and Debian's
# Chromium with node and npm for the web client's end-to-end test.
if [ "${MESSENGER_DEPS_TEST:-1}" = 1 ]; then
    PKGS+=(redis-server chromium)
    command -v node >/dev/null 2>&1 || PKGS+=(nodejs)
    command -v npm >/dev/null 2>&1 || PKGS+=(npm)
fi
# The Cassandra tests run a real Cassandra 5.0 (scripts/cassandra): Java 17 and
# Maven. The machine may already have both outside Debian's packages.
if [ "${MESSENGER_DEPS_CASSANDRA:-1}" = 1 ]; then
    ls /usr/lib/jvm/*17*/bin/java >/dev/null 2>&1 || PKGS+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || PKGS+=(maven)
fi
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

# pytest drives the black-box HTTP tests; the DataStax driver cross-checks
# what we write to Cassandra.
if ! python3 -c 'import pytest' 2>/dev/null; then
    echo "deps: installing pytest" >&2
    python3 -m pip install -q pytest >&2 || {
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pytest >&2
    }
fi
if [ "${MESSENGER_DEPS_CASSANDRA:-1}" = 1 ] && ! python3 -c 'import cassandra.cluster' 2>/dev/null; then
    echo "deps: installing cassandra-driver" >&2
    python3 -m pip install -q cassandra-driver >&2
fi
