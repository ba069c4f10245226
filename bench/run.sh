#!/usr/bin/env bash
# bench/run.sh - `make bench`: benchmark messenger on this machine.
#
# Installs the Debian packages it needs (when missing), builds build/messenger
# with release flags, raises the open-file limit (10,000 idle connections in
# the memory scenario) and runs bench/bench.py, which seeds or reuses the data
# sets, starts the server on loopback, drives it with wrk and prints the
# table and the targets. Results go to bench/results/ (git-ignored).
#
# Knobs (environment): STORES="lmdb" (or "lmdb cassandra": bench.py then runs
# scripts/cassandra start unless the node is up, seeds a keyspace per data set,
# and stops the node at the end only if it started it), BENCH_QUICK=1, BENCH_FRESH=1,
# BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_SWEEP, BENCH_SCENARIOS
# and more: see bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential pkg-config libmicrohttpd-dev liblmdb-dev libjansson-dev libssl-dev
      wrk gnuplot-nox python3)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Release flags (-O2), whatever VARIANT the caller's environment has.
make --no-print-directory VARIANT=release build >&2

# The server and the idle-connection client need more than 10,000 files.
# Raising the hard limit needs CAP_SYS_RESOURCE (root, outside a restricted
# container); otherwise take what the hard limit allows.
if ! ulimit -n 65536 2>/dev/null; then
    ulimit -n "$(ulimit -Hn)"
    echo "bench: cannot raise the open-file limit to 65536; using the hard limit $(ulimit -n)" >&2
fi

PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
exec "$PY" bench/bench.py "$@"
