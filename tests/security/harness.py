"""Shared tools of the adversarial suite.

The server harness is tests/http/conftest.py, loaded here once under the
module name ``messenger_http_harness`` (not ``conftest``, which is this
directory's own), so both suites share one copy of its globals: the list of
started servers, the Cassandra keyspaces to drop, the log capture.

What this module adds is what an attacker needs and a well-behaved client
does not: raw sockets (a reset instead of a close, a chosen source address,
requests that lie), a raw response reader that keeps the header bytes as
sent, a small Server-Sent Events client, concurrency with a barrier, and a
scan of the server's log for sanitizer reports.
Only the standard library.
"""
import importlib.util
import json
import os
import queue
import re
import socket
import struct
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
_HTTP_CONFTEST = REPO_ROOT / "tests" / "http" / "conftest.py"
_NAME = "messenger_http_harness"


def _load_http_harness():
    mod = sys.modules.get(_NAME)
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_file_location(_NAME, _HTTP_CONFTEST)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = mod
    spec.loader.exec_module(mod)
    return mod


H = _load_http_harness()

ServerProcess = H.ServerProcess
Client = H.Client
AuthClient = H.AuthClient
make_account = H.make_account
register = H.register
login = H.login
new_username = H.new_username
new_password = H.new_password
derive_conversation_id = H.derive_conversation_id
walk_messages = H.walk_messages
parse_time = H.parse_time
AUTH_ARGS = H.AUTH_ARGS
FAST_ARGON2 = H.FAST_ARGON2
CASSANDRA = H.CASSANDRA
WEB_DIR = REPO_ROOT / "web"

# Longest wait for one thing that should happen soon (an answer, an event).
WAIT = 20.0 if CASSANDRA else 10.0


def now_ms():
    return round(time.time() * 1000)


# --------------------------------------------------------------------------
# sockets
# --------------------------------------------------------------------------

def connect(server, source=None, timeout=WAIT):
    """A TCP connection to server, from source (a loopback address) if given."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect((server.host, server.port))
    return s


def reset(sock):
    """Closes with an RST instead of a FIN: SO_LINGER {on, 0 s}."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def request_bytes(method, path, token=None, body=None, headers=None, host="x"):
    """An HTTP/1.1 request as bytes. body: bytes, or a JSON-able object."""
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


class RawResponse:
    """A response read off a socket, its header block kept as raw bytes."""

    def __init__(self, status, head, body):
        self.status = status
        self.head = head            # bytes: status line + header lines, no final CRLFCRLF
        self.body = body
        self.header_lines = head.split(b"\r\n")[1:]

    def headers(self):
        """[(lowercase name, value)] as sent."""
        out = []
        for ln in self.header_lines:
            k, _, v = ln.partition(b":")
            out.append((k.strip().lower().decode("latin-1"), v.strip().decode("latin-1")))
        return out

    def header(self, name):
        for k, v in self.headers():
            if k == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"RawResponse({self.status}, {self.head[:300]!r}, {self.body[:300]!r})"


def read_response(sock, timeout=WAIT, head_only=False):
    """Reads one response: a RawResponse, or None when the connection ends
    (FIN or RST) or times out before a complete status line and headers.
    The body is read by Content-Length or chunked coding, or to the close."""
    deadline = time.monotonic() + timeout
    buf = b""

    def more():
        nonlocal buf
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except (socket.timeout, OSError):
            return False
        if not data:
            return False
        buf += data
        return True

    while b"\r\n\r\n" not in buf:
        if not more():
            return None
    head, _, rest = buf.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        return RawResponse(None, head, rest)
    status = int(m.group(1))
    resp = RawResponse(status, head, b"")
    if head_only or status in (204, 304) or 100 <= status < 200:
        return resp
    te = (resp.header("transfer-encoding") or "").lower()
    cl = resp.header("content-length")
    buf = rest
    if "chunked" in te:
        body = b""
        while True:
            while b"\r\n" not in buf:
                if not more():
                    resp.body = body
                    return resp
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                resp.body = body
                return resp
            while len(buf) < size + 2:
                if not more():
                    resp.body = body + buf
                    return resp
            body += buf[:size]
            buf = buf[size + 2:]
    if cl is not None:
        n = int(cl)
        while len(buf) < n:
            if not more():
                break
        resp.body = buf[:n]
        return resp
    while more():
        pass
    resp.body = buf
    return resp


def exchange(server, data, source=None, timeout=WAIT, head_only=False, shutdown_write=False):
    """Sends data on a new connection and reads one response (or None)."""
    s = connect(server, source=source, timeout=timeout)
    try:
        try:
            s.sendall(data)
            if shutdown_write:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close before it has read everything
        return read_response(s, timeout=timeout, head_only=head_only)
    finally:
        s.close()


def closed_soon(sock, timeout):
    """True when the peer closes (FIN or RST) within timeout; data before the
    close is read and dropped."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except OSError:
            return True


def _proc_net_addr(ip, port):
    a = socket.inet_aton(ip)
    return f"{struct.unpack('<I', a)[0]:08X}:{port:04X}"


def server_rx_queue(server_port, client_addr):
    """Bytes the server's end of the connection from client_addr (ip, port)
    has received and the server has not read yet (from /proc/net/tcp), or
    None when there is no such socket."""
    local = _proc_net_addr("127.0.0.1", server_port)
    remote = _proc_net_addr(*client_addr)
    with open("/proc/net/tcp") as f:
        for ln in f.readlines()[1:]:
            parts = ln.split()
            if parts[1] == local and parts[2] == remote:
                return int(parts[4].split(":")[1], 16)
    return None


def wait_server_read_all(server, sock, timeout=WAIT):
    """Waits (polling /proc/net/tcp) until the server process has read every
    byte sent on sock. True when it has."""
    client_addr = sock.getsockname()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = server_rx_queue(server.port, client_addr)
        if q == 0:
            return True
        time.sleep(0.002)
    return False


# --------------------------------------------------------------------------
# concurrency
# --------------------------------------------------------------------------

def run_together(n, prepare, act, timeout=120.0):
    """n threads: each calls prepare(i) (e.g. connects), then all wait on one
    barrier, then each calls act(i, prepared). Returns the n results (an
    exception object where act raised). Bounded by timeout."""
    barrier = threading.Barrier(n, timeout=timeout)
    results = [None] * n

    def work(i):
        try:
            p = prepare(i)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            results[i] = e
            try:
                barrier.abort()
            except Exception:
                pass
            return
        try:
            barrier.wait()
            results[i] = act(i, p)
        except BaseException as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"threads still running after {timeout}s"
    return results


# --------------------------------------------------------------------------
# the server's health and its log
# --------------------------------------------------------------------------

SANITIZER_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer|MemorySanitizer)|"
    r"runtime error:|WARNING: ThreadSanitizer|SUMMARY: \w+Sanitizer|"
    r"Assertion .* failed|AddressSanitizer:DEADLYSIGNAL")


def full_log(server):
    if not server.log_path or not os.path.exists(server.log_path):
        return ""
    with open(server.log_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def sanitizer_report(server):
    """The sanitizer/assertion report in the server's log (an excerpt), or None."""
    text = full_log(server)
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


# --------------------------------------------------------------------------
# Server-Sent Events
# --------------------------------------------------------------------------

class Block:
    """One SSE block: its fields in order, comments as (':', text)."""

    def __init__(self, fields):
        self.fields = fields

    def get(self, name):
        return [v for k, v in self.fields if k == name]

    @property
    def id(self):
        v = self.get("id")
        return v[-1] if v else None

    @property
    def event(self):
        v = self.get("event")
        return v[-1] if v else None

    @property
    def data(self):
        return "\n".join(self.get("data")) if self.get("data") else None

    @property
    def is_heartbeat(self):
        return all(k == ":" for k, _ in self.fields)

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return f"Block({self.fields!r})"


class _Eof:
    def __repr__(self):
        return "EOF"


EOF = _Eof()


class SSEStream:
    """GET /api/events on a socket of its own. A reader thread parses the
    answer into a queue of Blocks, then EOF (at the end of the chunked body,
    a close or a reset). .eof_at is the time.monotonic() of the end."""

    def __init__(self, server, token=None, last_event_id=None, query="", source=None,
                 extra_headers=None):
        self.sock = connect(server, source=source)
        self.sock.settimeout(None)
        self.q = queue.Queue()
        self.head = threading.Event()
        self.status = None
        self.headers = {}
        self.body = b""
        self.blocks = []          # every block received, for inspection
        self.eof_at = None
        self._text = b""
        self._fields = []
        lines = [f"GET /api/events{query} HTTP/1.1", "Host: x", "Accept: text/event-stream"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        for k, v in (extra_headers or {}).items():
            lines.append(f"{k}: {v}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self):
        buf = b""
        state = "head"
        chunk_left = 0
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                while True:
                    if state == "head":
                        if b"\r\n\r\n" not in buf:
                            break
                        head, _, buf = buf.partition(b"\r\n\r\n")
                        lines = head.decode("latin-1").split("\r\n")
                        self.status = int(lines[0].split()[1])
                        for ln in lines[1:]:
                            k, _, v = ln.partition(":")
                            self.headers[k.strip().lower()] = v.strip()
                        te = self.headers.get("transfer-encoding", "").lower()
                        state = "size" if "chunked" in te else "plain"
                        self.head.set()
                    elif state == "size":
                        if b"\r\n" not in buf:
                            break
                        ln, _, buf = buf.partition(b"\r\n")
                        chunk_left = int(ln.split(b";")[0], 16)
                        if chunk_left == 0:
                            return
                        state = "chunk"
                    elif state == "chunk":
                        if len(buf) < chunk_left + 2:
                            break
                        self._payload(buf[:chunk_left])
                        buf = buf[chunk_left + 2:]
                        state = "size"
                    else:  # plain
                        if buf:
                            self._payload(buf)
                            buf = b""
                        break
        except OSError:
            pass
        finally:
            self.eof_at = time.monotonic()
            self.head.set()
            self.q.put(EOF)

    def _payload(self, data):
        self.body += data
        if self.status != 200:
            return
        self._text += data
        *lines, self._text = self._text.split(b"\n")
        for ln in lines:
            ln = ln.decode("utf-8").rstrip("\r")
            if ln == "":
                if self._fields:
                    b = Block(self._fields)
                    self.blocks.append(b)
                    self.q.put(b)
                    self._fields = []
            elif ln.startswith(":"):
                self._fields.append((":", ln[1:].lstrip(" ")))
            else:
                k, _, v = ln.partition(":")
                self._fields.append((k, v[1:] if v.startswith(" ") else v))

    def wait_status(self, timeout=WAIT):
        assert self.head.wait(timeout), f"no response head within {timeout}s"
        assert self.status is not None, "the connection ended before a response head"
        return self.status

    def open(self, timeout=WAIT):
        """Waits for 200 and the `retry:` preamble; returns self."""
        st = self.wait_status(timeout)
        assert st == 200, f"GET /api/events -> {st}: {self.body[:300]!r}"
        b = self.next(timeout)
        assert b is not EOF, "the stream ended before its preamble"
        assert b.get("retry"), f"the stream must start with retry:, got {b!r}"
        return self

    def next(self, timeout=WAIT):
        try:
            return self.q.get(timeout=max(0.001, timeout))
        except queue.Empty:
            raise AssertionError(f"nothing on the stream within {timeout}s")

    def next_message(self, timeout=WAIT):
        """The next message block (heartbeats skipped); EOF if the stream ends."""
        deadline = time.monotonic() + timeout
        while True:
            b = self.next(deadline - time.monotonic())
            if b is EOF or not b.is_heartbeat:
                return b

    def wait_eof(self, timeout):
        """True when the stream ends within timeout; returns the blocks seen
        meanwhile in .drained."""
        self.drained = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                b = self.q.get(timeout=left)
            except queue.Empty:
                return False
            if b is EOF:
                return True
            self.drained.append(b)

    @property
    def ended(self):
        return self.eof_at is not None

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def message_ids(blocks):
    return [b.id for b in blocks if b is not EOF and b.event == "message"]


def send(acct, receiver, content, **extra):
    """acct sends content to receiver (an Account or a user id); asserts 201."""
    to = receiver if isinstance(receiver, str) else receiver.user_id
    body = {"receiver_id": to, "content": content}
    body.update(extra)
    status, m, _ = acct.client.call("POST", "/api/messages/", body)
    assert status == 201, ("send", status, m)
    return m


def messages_of(acct, cid, limit=100):
    """Every message of a conversation as acct reads it, newest first."""
    return walk_messages(acct.client, cid, limit=limit)


def fresh_uuid():
    return str(uuid.uuid4())
