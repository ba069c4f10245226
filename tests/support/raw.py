"""Raw sockets: what a well-behaved client never does.

A connection from a chosen source address, a reset instead of a close,
requests written byte by byte (that may lie about their length), a
response reader that keeps the header bytes as sent, and a look at the
kernel's receive queue of the server's end of a connection.
Only the standard library.
"""
import json
import re
import socket
import struct
import time

from .env import WAIT


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


def send_bytes(sock, data, shutdown_write=False):
    """Sends data (then a FIN when shutdown_write); a server that closes
    before it has read everything is not an error here."""
    try:
        sock.sendall(data)
        if shutdown_write:
            sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


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


class _Reader:
    """Bytes off a socket into .buf, each recv bounded by one deadline."""

    def __init__(self, sock, timeout):
        self.sock = sock
        self.deadline = time.monotonic() + timeout
        self.buf = b""

    def more(self):
        """Reads once more; False at the deadline, the end or an error."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, OSError):
            return False
        if not data:
            return False
        self.buf += data
        return True


def _read_chunked(r):
    """The body of a chunked response, what there is of it if it is cut short."""
    body = b""
    while True:
        while b"\r\n" not in r.buf:
            if not r.more():
                return body
        size_line, _, r.buf = r.buf.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        while len(r.buf) < size + 2:
            if not r.more():
                return body + r.buf
        body += r.buf[:size]
        r.buf = r.buf[size + 2:]


def read_response(sock, timeout=WAIT, head_only=False):
    """Reads one response: a RawResponse, or None when the connection ends
    (FIN or RST) or times out before a complete status line and headers.
    The body is read by Content-Length or chunked coding, or to the close."""
    r = _Reader(sock, timeout)
    while b"\r\n\r\n" not in r.buf:
        if not r.more():
            return None
    head, _, r.buf = r.buf.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        return RawResponse(None, head, r.buf)
    status = int(m.group(1))
    resp = RawResponse(status, head, b"")
    if head_only or status in (204, 304) or 100 <= status < 200:
        return resp
    cl = resp.header("content-length")
    if "chunked" in (resp.header("transfer-encoding") or "").lower():
        resp.body = _read_chunked(r)
    elif cl is not None:
        n = int(cl)
        while len(r.buf) < n and r.more():
            pass
        resp.body = r.buf[:n]
    else:
        while r.more():
            pass
        resp.body = r.buf
    return resp


def exchange(server, data, source=None, timeout=WAIT, head_only=False, shutdown_write=False):
    """Sends data on a new connection and reads one response (or None)."""
    s = connect(server, source=source, timeout=timeout)
    try:
        send_bytes(s, data, shutdown_write)
        return read_response(s, timeout=timeout, head_only=head_only)
    finally:
        s.close()


def raw_request(server, data, read_timeout=10.0, shutdown_write=False):
    """Sends raw bytes on a new connection; returns the bytes received until
    the server closes or a complete-looking response arrives / timeout."""
    s = connect(server, timeout=read_timeout)
    try:
        send_bytes(s, data, shutdown_write)
        chunks = []
        deadline = time.monotonic() + read_timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except OSError:  # a timeout too
                break
            if not chunk:
                break
            chunks.append(chunk)
            head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
            if sep:
                cl = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
                if cl and len(body) >= int(cl[0]):
                    break
        return b"".join(chunks)
    finally:
        s.close()


def status_of(resp):
    """The status code of raw response bytes, or None when they are not one."""
    if not resp.startswith(b"HTTP/1."):
        return None
    return int(resp.split(b" ", 2)[1])


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
