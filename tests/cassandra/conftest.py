"""Fixtures for the Cassandra-only tests: a real Cassandra on 127.0.0.1:9042
(started by scripts/cassandra, see scripts/test.sh), the messenger binary
($MESSENGER_BIN) on a keyspace of its own, and the DataStax Python driver."""
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MESSENGER_BIN = os.environ.get("MESSENGER_BIN") or str(REPO_ROOT / "build" / "messenger")
CASSANDRA_SCRIPT = str(REPO_ROOT / "scripts" / "cassandra")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_keyspace(prefix="c"):
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class Client:
    """A keep-alive JSON client: call() -> (status, body or None)."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise

    def close(self):
        self.conn.close()


class Server:
    def __init__(self, keyspace, log_path, extra=()):
        self.keyspace = keyspace
        self.port = free_port()
        self.log_path = log_path
        self.extra = list(extra)
        self.proc = None

    def start(self, wait=True):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [MESSENGER_BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--store", "cassandra",
             "--cassandra-keyspace", self.keyspace, "--log-level", "info", *self.extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        if wait:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"server exited:\n{self.log()}"
                try:
                    c = Client(self.port)
                    st, _ = c.call("GET", "/health")
                    c.close()
                    if st == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.1)
            pytest.fail(f"server not healthy within 60 s:\n{self.log()}")
        return self

    def log(self):
        try:
            return Path(self.log_path).read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"server did not stop on SIGTERM:\n{self.log()}")
        return self.proc.returncode if self.proc else None


@pytest.fixture
def start_server(tmp_path):
    servers = []

    def start(keyspace, extra=(), wait=True):
        s = Server(keyspace, tmp_path / f"server-{len(servers)}.log", extra).start(wait)
        servers.append(s)
        return s

    yield start
    codes = [(s, s.stop()) for s in servers]
    drop_keyspaces({s.keyspace for s in servers})
    for s, code in codes:
        assert code == 0, f"server exit code {code}:\n{s.log()}"


def drop_keyspaces(names):
    """Each keyspace costs the 1 GiB test node memory: drop what a test made."""
    if not names:
        return
    from cassandra.cluster import Cluster
    cluster = Cluster(["127.0.0.1"], port=9042)
    try:
        session = cluster.connect()
        for ks in names:
            session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=60)
    finally:
        cluster.shutdown()


@pytest.fixture(scope="session")
def driver():
    """A DataStax driver session (no keyspace)."""
    from cassandra.cluster import Cluster
    cluster = Cluster(["127.0.0.1"], port=9042)
    session = cluster.connect()
    yield session
    cluster.shutdown()


def run_messenger(*args, timeout=120):
    proc = subprocess.run([MESSENGER_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)
    assert proc.returncode == 0, f"messenger {' '.join(args)} exited {proc.returncode}:\n{proc.stdout.decode()}"
    return proc.stdout.decode()
