"""One Server-Sent Events client for GET /api/events.

A raw socket per stream (so a test can choose the source address, shrink the
receive buffer, or never read), HTTP/1.1 with a chunked or a plain body, a
reader thread that parses what arrives into a queue of Blocks and then EOF
(at the end of the chunked body, a close or a reset), and bounded waits
everywhere: a wait that runs out raises AssertionError.
"""
import json
import queue
import socket
import threading
import time

from .env import CASSANDRA

# The default bound of every wait, for one expected event or answer.
WAIT = 15.0 if CASSANDRA else 10.0

# What every stream starts with: reconnect after 2 s.
PREAMBLE = [("retry", "2000")]


class Block:
    """One SSE block (the lines up to a blank line). .fields has every line
    in order as (name, value), comments as (":", text); .t is the
    time.monotonic() at which the block was complete."""

    def __init__(self):
        self.id = None
        self.event = None
        self.data_lines = []
        self.retry = None
        self.comments = []
        self.fields = []
        self.t = None

    def get(self, name):
        """The values of every `name:` line, in order."""
        return [v for k, v in self.fields if k == name]

    @property
    def data(self):
        return "\n".join(self.data_lines) if self.data_lines else None

    @property
    def is_heartbeat(self):
        """Comments only (": keep-alive")."""
        return bool(self.fields) and all(k == ":" for k, _ in self.fields)

    @property
    def is_message(self):
        return self.event == "message" or (self.event is None and self.data_lines)

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return f"Block({self.fields!r})"


class _Eof:
    def __repr__(self):
        return "EOF"


EOF = _Eof()  # what a stream's queue holds after its last Block


def message_ids(blocks):
    """The ids of the message events among blocks."""
    return [b.id for b in blocks if b is not EOF and b.event == "message"]


class SSEParser:
    """Feed it the raw bytes of an HTTP response; it parses the status line
    and headers, undoes chunked transfer coding, and splits the body into
    SSE blocks (only a 200's body: another status's is kept in .body)."""

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
            step = {"head": self._head, "chunk-size": self._chunk_size, "chunk": self._chunk,
                    "chunk-end": self._chunk_end, "trailer": self._trailer,
                    "plain": self._plain}[self.state]()
            if step is None:
                return out
            out += step

    # Each state's step: the blocks it completed ([] when it made progress
    # without one), or None when it needs more bytes or the body is done.

    def _head(self):
        i = self.buf.find(b"\r\n\r\n")
        if i < 0:
            return None
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
        return []

    def _chunk_size(self):
        i = self.buf.find(b"\r\n")
        if i < 0:
            return None
        size = int(self.buf[:i].split(b";")[0], 16)
        self.buf = self.buf[i + 2:]
        if size == 0:
            self.state = "trailer"
        else:
            self.chunk_left = size
            self.state = "chunk"
        return []

    def _chunk(self):
        if not self.buf:
            return None
        take = self.buf[:self.chunk_left]
        self.buf = self.buf[len(take):]
        self.chunk_left -= len(take)
        if self.chunk_left == 0:
            self.state = "chunk-end"
        return self._body(take)

    def _chunk_end(self):
        if len(self.buf) < 2:
            return None
        assert self.buf[:2] == b"\r\n", f"bad chunk framing: {self.buf[:20]!r}"
        self.buf = self.buf[2:]
        self.state = "chunk-size"
        return []

    def _trailer(self):
        self.done = True
        return None

    def _plain(self):
        if not self.buf or self.done:
            return None
        take = self.buf
        if self.length is not None:
            take = self.buf[:self.length - len(self.body)]
        self.buf = self.buf[len(take):]
        out = self._body(take)
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
    """GET /api/events on a socket of its own.

    target is a port on 127.0.0.1 (or on host), or a server (anything with
    .host and .port). source binds the socket to that local address first;
    rcvbuf sets its receive buffer; read=False starts no reader (a client
    that never reads). headers are added to the request. wait is the
    default bound of every wait. strict_preamble: open() wants exactly
    `retry: 2000` first; False takes any block with a retry field.

    .drained has the blocks wait_eof() passed over, .eof_at the
    time.monotonic() of the end, .received the bytes read.
    """

    def __init__(self, target, token=None, last_event_id=None, query="", headers=None,
                 host="127.0.0.1", rcvbuf=None, read=True, source=None, wait=WAIT,
                 strict_preamble=True):
        if not isinstance(target, int):
            host, target = target.host, target.port
        self.wait = wait
        self.strict_preamble = strict_preamble
        self.parser = SSEParser()
        self.q = queue.Queue()
        self.head = threading.Event()
        self.eof = threading.Event()
        self.eof_at = None
        self.received = 0
        self.drained = []
        self.sock = self._connect(host, target, source, rcvbuf)
        lines = [f"GET /api/events{query} HTTP/1.1", f"Host: {host}:{target}",
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

    def _connect(self, host, port, source, rcvbuf):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            sock.bind((source, 0))
        sock.settimeout(self.wait)
        sock.connect((host, port))
        sock.settimeout(None)
        return sock

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
            self.eof_at = time.monotonic()
            self.head.set()
            self.eof.set()
            self.q.put(EOF)

    # ---- what has come ----

    @property
    def headers(self):
        """The response's headers, lowercase names."""
        return self.parser.headers

    @property
    def body(self):
        """The response's body so far, decoded from its transfer coding."""
        return bytes(self.parser.body)

    @property
    def ended(self):
        return self.eof_at is not None

    # ---- waiting ----

    def status(self, timeout=None):
        timeout = self.wait if timeout is None else timeout
        assert self.head.wait(timeout), f"no response head within {timeout}s"
        assert self.parser.status is not None, "connection closed before a response head"
        return self.parser.status

    wait_status = status

    def error(self, timeout=None):
        """For a non-200 answer: (status, headers, parsed JSON body)."""
        timeout = self.wait if timeout is None else timeout
        st = self.status(timeout)
        assert self.eof.wait(timeout) or self.parser.done, "error body not finished"
        deadline = time.monotonic() + timeout
        while not self.parser.done and not self.eof.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        body = self.body
        return st, self.parser.headers, (json.loads(body) if body else None)

    def next(self, timeout=None):
        """The next Block, or EOF; AssertionError when nothing comes in time."""
        timeout = self.wait if timeout is None else timeout
        try:
            return self.q.get(timeout=max(0.001, timeout))
        except queue.Empty:
            raise AssertionError(f"no SSE block within {timeout}s (stream status {self.parser.status})")

    def next_nonheartbeat(self, timeout=None):
        """The next Block that is not a heartbeat, or EOF."""
        deadline = time.monotonic() + (self.wait if timeout is None else timeout)
        while True:
            b = self.next(max(0.01, deadline - time.monotonic()))
            if b is EOF or not b.is_heartbeat:
                return b

    def next_message(self, timeout=None):
        """The next message event (heartbeats skipped); asserts that it is one."""
        b = self.next_nonheartbeat(timeout)
        assert b is not EOF, "the stream ended while a message was expected"
        assert b.event == "message", f"expected a message event, got {b!r}"
        return b

    def messages(self, n, timeout=None):
        """The next n message events (heartbeats skipped)."""
        timeout = self.wait if timeout is None else timeout
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(out)} of {n} message events within {timeout}s"
            out.append(self.next_message(left))
        return out

    def open(self, timeout=None):
        """Waits for 200 and the retry preamble; returns self."""
        timeout = self.wait if timeout is None else timeout
        st = self.status(timeout)
        if st != 200:
            raise AssertionError(f"GET /api/events -> {st}: {self.body[:300]!r}")
        b = self.next(timeout)
        assert b is not EOF, "stream ended before the retry preamble"
        if self.strict_preamble:
            assert b.fields == PREAMBLE, f"the stream must start with `retry: 2000`, got {b!r}"
        else:
            assert b.get("retry"), f"the stream must start with retry:, got {b!r}"
        return self

    def wait_eof(self, timeout):
        """True when the stream ended within timeout; the blocks that came
        meanwhile are in .drained (and no longer in the queue)."""
        self.drained = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if b is EOF:
                return True
            self.drained.append(b)
        return False

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.thread is not None:
            self.thread.join(5)
