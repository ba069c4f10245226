#!/usr/bin/env bash
# End-to-end test of the web client in headless Chromium (tests/web/e2e.test.mjs).
#
# Builds nothing: expects MESSENGER_BIN (default <repo>/build/messenger). Installs
# what it needs (node_modules with npm ci, Debian's chromium), starts the server on
# a free loopback port with a temporary data dir, runs `node --test` (TAP on
# stdout: "# pass N" / "# fail N"), stops the server with SIGTERM (it must exit 0)
# and exits with the test status.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${MESSENGER_BIN:-$repo/build/messenger}
chromium=${CHROMIUM_PATH:-/usr/bin/chromium}

log() { echo "web-e2e: $*" >&2; }

if [ ! -x "$bin" ]; then
    log "no server binary at $bin (build it first: make)"
    exit 1
fi
for tool in node npm; do
    command -v "$tool" >/dev/null || { log "$tool is not installed"; exit 1; }
done

if [ ! -x "$chromium" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing Debian's chromium"
    if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2; then
        $sudo apt-get update >&2 &&
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2 ||
            { log "could not install chromium"; exit 1; }
    fi
fi

if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
    log "npm ci"
    (cd "$here" && npm ci --no-audit --no-fund >&2) || { log "npm ci failed"; exit 1; }
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/messenger-web-e2e.XXXXXX")
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port (the kernel picks it; a tiny race with other users is retried below).
free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start_server() {
    port=$(free_port) || return 1
    "$bin" serve --listen "127.0.0.1:$port" --data-dir "$tmp/data" --web-dir "$repo/web" \
        --argon2-memory-kib 1024 --argon2-iterations 1 --log-level warn \
        >"$tmp/server.log" 2>&1 &
    server_pid=$!
    # Ready when /health answers 200.
    for _ in $(seq 1 100); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            wait "$server_pid" 2>/dev/null
            server_pid=""
            return 1
        fi
        if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))' \
            "http://127.0.0.1:$port/health" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

started=0
for attempt in 1 2 3; do
    if start_server; then started=1; break; fi
    log "server did not start (attempt $attempt):"
    tail -n 20 "$tmp/server.log" >&2
    [ -n "$server_pid" ] && { kill -KILL "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=""; }
done
[ "$started" -eq 1 ] || { log "giving up"; exit 1; }
log "server on 127.0.0.1:$port (pid $server_pid)"

mkdir -p "$here/artifacts"
# The reconnection test starts a second server of its own from MESSENGER_BIN.
(cd "$here" && MESSENGER_URL="http://127.0.0.1:$port" CHROMIUM_PATH="$chromium" \
    MESSENGER_BIN="$bin" MESSENGER_WEB_DIR="$repo/web" \
    node --test --test-reporter=tap --test-timeout=120000 e2e.test.mjs)
status=$?

kill -TERM "$server_pid"
wait "$server_pid"
server_status=$?
server_pid=""
if [ "$server_status" -ne 0 ]; then
    log "the server exited with status $server_status after SIGTERM (expected 0); its log:"
    tail -n 40 "$tmp/server.log" >&2
    [ "$status" -ne 0 ] || status=1
elif [ "$status" -ne 0 ]; then
    log "tests failed; the server's log:"
    tail -n 40 "$tmp/server.log" >&2
fi
log "screenshots in $here/artifacts"
exit "$status"
