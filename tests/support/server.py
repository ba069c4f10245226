"""`messenger serve` processes, and the binary's other commands.

A ServerProcess runs the real binary on a free loopback port, with its
output in a log file of its own, on the store under test: a data directory
(LMDB, or on Cassandra the keyspace that stands for it: see store.py) or a
named Cassandra keyspace. It is healthy when GET /health answers 200; it
stops on SIGTERM (or another signal) within its shutdown timeout, else it
is killed and its exit code is "timeout".

Every server started in the session is remembered: the log of each one
running or stopped during a failing test goes with the test's report
(fixtures.py's hooks), the adversarial suite scans their logs for sanitizer
reports, and whatever is still running when Python exits is killed.

A server's environment is ours with MESSENGER_AUTH set from its auth
argument: False (the default) "off", the open API most tests were written
for; True "on"; None unset, so that the server's default applies.
"""
import atexit
import http.client
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .client import AuthClient, Client
from .env import CASSANDRA, MESSENGER_BIN, REPO_ROOT
from .store import keyspace_args, store_args

STARTUP_TIMEOUT = 60.0 if CASSANDRA else 10.0  # a new keyspace takes a few seconds
SHUTDOWN_TIMEOUT = 10.0
SEED_TIMEOUT = 120.0 if CASSANDRA else 60.0

# Password hashing that costs about a millisecond: registrations and logins
# are part of most auth tests.
FAST_ARGON2 = ("--argon2-memory-kib", "1024", "--argon2-iterations", "1")
AUTH_ARGS = FAST_ARGON2 + ("--sse-heartbeat", "1")

_ALL_SERVERS = []       # every ServerProcess started in this session
_RECENTLY_STOPPED = []  # servers stopped during the current test


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary():
    if not (os.path.isfile(MESSENGER_BIN) and os.access(MESSENGER_BIN, os.X_OK)):
        pytest.fail(
            f"messenger binary not found at {MESSENGER_BIN}; build it with "
            f"`make -C {REPO_ROOT}` or set MESSENGER_BIN",
            pytrace=False,
        )


def run_seed(data_dir):
    """Runs `messenger seed --data-dir DIR`; fails the test on a non-zero exit."""
    require_binary()
    proc = subprocess.run(
        [MESSENGER_BIN, "seed", *store_args(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=SEED_TIMEOUT,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"`messenger seed --data-dir {data_dir}` exited with {proc.returncode}:\n"
            + proc.stdout.decode("utf-8", "replace"),
            pytrace=False,
        )
    return proc


def run_messenger(*args, timeout=120):
    """Runs `messenger ARGS...`; asserts exit 0 and returns its output (stdout
    and stderr together)."""
    proc = subprocess.run([MESSENGER_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)
    assert proc.returncode == 0, f"messenger {' '.join(args)} exited {proc.returncode}:\n{proc.stdout.decode()}"
    return proc.stdout.decode()


def server_env(auth=False, env=None):
    """The environment of a server: ours, with MESSENGER_AUTH set from auth
    (False: off, True: on, None: unset, so the server's default applies),
    then env's entries (a value of None removes the variable)."""
    e = dict(os.environ)
    e.pop("MESSENGER_AUTH", None)
    # Every test registers its users from 127.0.0.1: lift the per-address
    # registration limit (tests/security tests the limit itself).
    e.setdefault("MESSENGER_REGISTER_ATTEMPTS", "1000000")
    if auth is not None:
        e["MESSENGER_AUTH"] = "on" if auth else "off"
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    return e


class ServerProcess:
    """One `messenger serve` process.

    The store is data_dir (see store.store_args) or, when given, the
    Cassandra keyspace. Logs go to log_dir (default: data_dir's parent),
    one file per start attempt. args are extra command-line flags; auth
    and env make the environment (see server_env)."""

    def __init__(self, data_dir=None, log_dir=None, args=(), env=None, auth=False, *,
                 keyspace=None, log_level="warn", shutdown_timeout=SHUTDOWN_TIMEOUT):
        assert (data_dir is None) != (keyspace is None), "a data directory or a keyspace"
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.keyspace = keyspace
        self.log_dir = Path(log_dir) if log_dir else self.data_dir.parent
        self.args = [str(a) for a in args]
        self.env = env
        self.auth = auth
        self.log_level = log_level
        self.shutdown_timeout = shutdown_timeout
        self.proc = None
        self.port = None
        self.log_path = None
        self.returncode = None

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    @property
    def host(self):
        return "127.0.0.1"

    @property
    def where(self):
        """The store, for messages: the data directory or the keyspace."""
        return str(self.data_dir) if self.data_dir is not None else f"keyspace {self.keyspace}"

    def command(self):
        store = store_args(self.data_dir) if self.keyspace is None else keyspace_args(self.keyspace)
        return [MESSENGER_BIN, "serve", "--listen", f"127.0.0.1:{self.port}",
                *store, "--log-level", self.log_level, *self.args]

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, limit=8000):
        """The log's tail (limit characters), or all of it with limit=None."""
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8", "replace")
        if limit is not None and len(text) > limit:
            text = "...[truncated]...\n" + text[-limit:]
        return text

    def start(self):
        require_binary()
        last_error = None
        for attempt in range(3):  # a port can be taken between probe and bind
            self.port = free_port()
            self.log_path = self.log_dir / f"messenger-{self.port}-{attempt}.log"
            log = open(self.log_path, "wb")
            try:
                self.proc = subprocess.Popen(
                    self.command(), env=server_env(self.auth, self.env),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                )
            finally:
                log.close()
            _ALL_SERVERS.append(self)
            ok, last_error = self._wait_healthy()
            if ok:
                self.returncode = None
                return self
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if "address already in use" not in self.log_text().lower():
                break
        pytest.fail(
            f"messenger did not become healthy within {STARTUP_TIMEOUT}s "
            f"(exit code {self.proc.poll()}, last error {last_error!r}).\n"
            f"command: MESSENGER_AUTH={server_env(self.auth, self.env).get('MESSENGER_AUTH', '')} "
            f"{' '.join(self.command())}\n"
            f"--- server log ---\n{self.log_text()}",
            pytrace=False,
        )

    def _wait_healthy(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last_error = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, f"exited with {self.proc.returncode}"
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                conn.request("GET", "/health")
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status == 200:
                    return True, None
                last_error = f"GET /health -> {resp.status}"
            except OSError as e:  # refused while starting, etc.
                last_error = repr(e)
            time.sleep(0.05)
        return False, last_error

    def stop(self, sig=signal.SIGTERM):
        """Sends sig, waits, and returns the exit code; kills the process
        when it has not exited within the shutdown timeout, and returns
        "timeout" then."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(self.shutdown_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return self._stopped("timeout")
        return self._stopped(self.proc.returncode)

    def kill9(self):
        """SIGKILL: a process crash, no shutdown code runs. Returns the exit code."""
        self.proc.kill()
        self.proc.wait(self.shutdown_timeout)
        return self._stopped(self.proc.returncode)

    def _stopped(self, returncode):
        self.returncode = returncode
        self.proc = None
        _RECENTLY_STOPPED.append(self)  # its log goes with a failing test's report
        return returncode

    def stop_and_check(self):
        rc = self.stop()
        assert rc == 0, (
            f"messenger did not shut down cleanly on SIGTERM (exit code {rc!r}, "
            f"expected 0 within {self.shutdown_timeout}s)\n--- server log ---\n{self.log_text()}"
        )

    def client(self, retry=True, token=None):
        if token is not None:
            return AuthClient(self.host, self.port, token, retry=retry)
        return Client(self.host, self.port, retry=retry)


@atexit.register
def _kill_leftovers():
    for srv in _ALL_SERVERS:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()


def running_servers():
    """Every server of the session that has a process (running or not yet reaped)."""
    return [s for s in _ALL_SERVERS if s.proc is not None]


def servers_of_this_test():
    """The servers whose logs a failing test's report shows: those running,
    and those stopped during the test."""
    seen, out = set(), []
    for srv in [s for s in _ALL_SERVERS if s.alive] + list(_RECENTLY_STOPPED):
        if id(srv) not in seen:
            seen.add(id(srv))
            out.append(srv)
    return out


def new_test():
    """A test begins: the servers stopped before it are not its own."""
    _RECENTLY_STOPPED.clear()


class ServerFactory:
    """Starts servers on chosen directories; stops whatever is left at teardown."""

    def __init__(self, tmp_root):
        self.tmp_root = Path(tmp_root)
        self.started = []

    def new_dir(self, name="data"):
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp_root))

    def start(self, data_dir, args=(), env=None, auth=False):
        srv = ServerProcess(data_dir, log_dir=self.tmp_root, args=args, env=env, auth=auth)
        srv.start()
        self.started.append(srv)
        return srv

    def seed(self, data_dir):
        return run_seed(data_dir)

    def cleanup(self):
        bad = []
        for srv in self.started:
            if srv.alive:
                rc = srv.stop()
                if rc != 0:
                    bad.append((srv, rc))
        return bad


# --------------------------------------------------------------------------
# sanitizer and assertion reports
# --------------------------------------------------------------------------

SANITIZER_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer|MemorySanitizer)|"
    r"runtime error:|WARNING: ThreadSanitizer|SUMMARY: \w+Sanitizer|"
    r"Assertion .* failed|AddressSanitizer:DEADLYSIGNAL")


def sanitizer_report(server):
    """The sanitizer/assertion report in the server's log (an excerpt), or None."""
    text = server.log_text(limit=None)
    m = SANITIZER_RE.search(text)
    if not m:
        return None
    start = text.rfind("\n", 0, max(0, m.start() - 200)) + 1
    return text[start:start + 6000]


def assert_alive(server, what=""):
    """The process runs, its log has no sanitizer report, GET /health is 200."""
    rep = sanitizer_report(server)
    assert rep is None, f"{what}: sanitizer report in the server log:\n{rep}"
    assert server.alive, (f"{what}: the server died (exit {server.proc and server.proc.poll()})\n"
                          f"{server.log_text()}")
    c = server.client(retry=False)
    try:
        status, body, _ = c.call("GET", "/health")
    finally:
        c.close()
    assert status == 200, (what, "GET /health", status, body)
