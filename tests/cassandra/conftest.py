"""Fixtures for the Cassandra-only tests: a real Cassandra on 127.0.0.1:9042
(started by scripts/cassandra, see scripts/test.sh), the messenger binary
($MESSENGER_BIN) on a keyspace of its own, and the DataStax Python driver.

Servers start with MESSENGER_AUTH=off (the open API these tests were written
for) unless started with auth=True."""
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import threading
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
    """A keep-alive JSON client: call() -> (status, body or None). With a
    token, every request carries `Authorization: Bearer <token>`. The raw
    bytes of the last answer are in .last_raw."""

    def __init__(self, port, token=None):
        self.port = port
        self.token = token
        self.last_raw = b""
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                self.last_raw = raw
                return resp.status, (json.loads(raw) if raw else None)
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise

    def close(self):
        self.conn.close()


def server_env(auth=False, env=None):
    e = dict(os.environ)
    e["MESSENGER_AUTH"] = "on" if auth else "off"
    # Every test registers its users from 127.0.0.1: lift the per-address
    # registration limit (tests/security tests the limit itself).
    e.setdefault("MESSENGER_REGISTER_ATTEMPTS", "1000000")
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    return e


class Server:
    def __init__(self, keyspace, log_path, extra=(), auth=False, env=None):
        self.keyspace = keyspace
        self.port = free_port()
        self.log_path = log_path
        self.extra = [str(x) for x in extra]
        self.auth = auth
        self.env = env
        self.proc = None

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait=True):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [MESSENGER_BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--store", "cassandra",
             "--cassandra-keyspace", self.keyspace, "--log-level", "info", *self.extra],
            env=server_env(self.auth, self.env),
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

    def start(keyspace, extra=(), wait=True, auth=False, env=None):
        s = Server(keyspace, tmp_path / f"server-{len(servers)}.log", extra, auth, env).start(wait)
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


# --------------------------------------------------------------------------
# SSE client (the same as tests/http/test_events.py's)
# --------------------------------------------------------------------------

WAIT = 15.0


class Block:
    """One SSE block (the lines up to a blank line)."""

    def __init__(self):
        self.id = None
        self.event = None
        self.data_lines = []
        self.retry = None
        self.comments = []
        self.fields = []  # (name, value) in order, comments as (":", text)
        self.t = None

    @property
    def data(self):
        return "\n".join(self.data_lines) if self.data_lines else None

    @property
    def is_heartbeat(self):
        return self.comments and not (self.data_lines or self.id is not None or self.event or self.retry)

    @property
    def is_message(self):
        return self.event == "message" or (self.event is None and self.data_lines)

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return f"Block({self.fields!r})"


class EOF:
    def __repr__(self):
        return "EOF"


EOF = EOF()


class SSEParser:
    """Feed it the raw bytes of an HTTP response; it parses the status line
    and headers, undoes chunked transfer coding, and splits the body into
    SSE blocks."""

    def __init__(self):
        self.buf = b""
        self.state = "head"
        self.status = None
        self.headers = {}
        self.chunked = False
        self.length = None
        self.chunk_left = 0
        self.body = bytearray()      # the decoded body, all of it
        self.line = b""
        self.cur = Block()
        self.done = False

    def feed(self, data):
        """Returns the blocks completed by data."""
        self.buf += data
        out = []
        while True:
            if self.state == "head":
                i = self.buf.find(b"\r\n\r\n")
                if i < 0:
                    return out
                head, self.buf = self.buf[:i].decode("latin-1"), self.buf[i + 4:]
                lines = head.split("\r\n")
                self.status = int(lines[0].split()[1])
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    self.headers[k.strip().lower()] = v.strip()
                self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
                if not self.chunked and "content-length" in self.headers:
                    self.length = int(self.headers["content-length"])
                self.state = "chunk-size" if self.chunked else "plain"
            elif self.state == "chunk-size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    return out
                size = int(self.buf[:i].split(b";")[0], 16)
                self.buf = self.buf[i + 2:]
                if size == 0:
                    self.state = "trailer"
                else:
                    self.chunk_left = size
                    self.state = "chunk"
            elif self.state == "chunk":
                if not self.buf:
                    return out
                take = self.buf[:self.chunk_left]
                self.buf = self.buf[len(take):]
                self.chunk_left -= len(take)
                out += self._body(take)
                if self.chunk_left == 0:
                    self.state = "chunk-end"
            elif self.state == "chunk-end":
                if len(self.buf) < 2:
                    return out
                assert self.buf[:2] == b"\r\n", f"bad chunk framing: {self.buf[:20]!r}"
                self.buf = self.buf[2:]
                self.state = "chunk-size"
            elif self.state == "trailer":
                self.done = True
                return out
            elif self.state == "plain":
                if not self.buf:
                    return out
                take = self.buf
                if self.length is not None:
                    take = self.buf[:self.length - len(self.body)]
                self.buf = self.buf[len(take):]
                out += self._body(take)
                if self.length is not None and len(self.body) >= self.length:
                    self.done = True
                    return out

    def _body(self, data):
        self.body += data
        if self.status != 200:
            return []
        out = []
        self.line += data
        while True:
            i = self.line.find(b"\n")
            if i < 0:
                break
            ln, self.line = self.line[:i], self.line[i + 1:]
            if ln.endswith(b"\r"):
                ln = ln[:-1]
            b = self._line(ln.decode("utf-8"))
            if b is not None:
                out.append(b)
        return out

    def _line(self, ln):
        cur = self.cur
        if ln == "":
            if not cur.fields:
                return None
            cur.t = time.monotonic()
            self.cur = Block()
            return cur
        if ln.startswith(":"):
            text = ln[1:]
            if text.startswith(" "):
                text = text[1:]
            cur.comments.append(text)
            cur.fields.append((":", text))
            return None
        name, sep, value = ln.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        cur.fields.append((name, value))
        if name == "id":
            cur.id = value
        elif name == "event":
            cur.event = value
        elif name == "data":
            cur.data_lines.append(value)
        elif name == "retry":
            cur.retry = value
        return None


class SSEStream:
    """GET /api/events on a socket of its own; a reader thread parses what
    arrives into a queue of Blocks (then EOF). Every wait is bounded."""

    def __init__(self, port, token=None, last_event_id=None, query="", headers=None,
                 host="127.0.0.1", rcvbuf=None, read=True):
        self.parser = SSEParser()
        self.q = queue.Queue()
        self.head = threading.Event()
        self.eof = threading.Event()
        self.received = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        self.sock.settimeout(None)
        lines = [f"GET /api/events{query} HTTP/1.1", f"Host: {host}:{port}",
                 "Accept: text/event-stream", "Cache-Control: no-cache"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.thread = None
        if read:
            self.thread = threading.Thread(target=self._reader, daemon=True)
            self.thread.start()

    def _reader(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.received += len(data)
                for b in self.parser.feed(data):
                    self.q.put(b)
                if self.parser.status is not None:
                    self.head.set()
                if self.parser.done:
                    break
        except OSError:
            pass
        finally:
            self.head.set()
            self.eof.set()
            self.q.put(EOF)

    # ---- waiting ----

    def status(self, timeout=WAIT):
        assert self.head.wait(timeout), f"no response head within {timeout}s"
        assert self.parser.status is not None, "connection closed before a response head"
        return self.parser.status

    def error(self, timeout=WAIT):
        """For a non-200 answer: (status, headers, parsed JSON body)."""
        st = self.status(timeout)
        assert self.eof.wait(timeout) or self.parser.done, "error body not finished"
        deadline = time.monotonic() + timeout
        while not self.parser.done and not self.eof.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        body = bytes(self.parser.body)
        return st, self.parser.headers, (json.loads(body) if body else None)

    def next(self, timeout=WAIT):
        """The next Block, or EOF; AssertionError when nothing comes in time."""
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no SSE block within {timeout}s (stream status {self.parser.status})")

    def next_nonheartbeat(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            b = self.next(max(0.01, deadline - time.monotonic()))
            if b is EOF or not b.is_heartbeat:
                return b

    def next_message(self, timeout=WAIT):
        b = self.next_nonheartbeat(timeout)
        assert b is not EOF, "the stream ended while a message was expected"
        assert b.event == "message", f"expected a message event, got {b!r}"
        return b

    def messages(self, n, timeout=WAIT):
        """The next n message events (heartbeats skipped)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(out)} of {n} message events within {timeout}s"
            out.append(self.next_message(left))
        return out

    def open(self, timeout=WAIT):
        """Waits for 200 and the retry preamble; returns self."""
        st = self.status(timeout)
        if st != 200:
            raise AssertionError(f"GET /api/events -> {st}: {bytes(self.parser.body)[:300]!r}")
        b = self.next(timeout)
        assert b is not EOF, "stream ended before the retry preamble"
        assert b.fields == [("retry", "2000")], f"the stream must start with `retry: 2000`, got {b!r}"
        return self

    def wait_eof(self, timeout):
        """True when the stream ended within timeout (events left unread are dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if b is EOF:
                return True
        return False

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.thread is not None:
            self.thread.join(5)
