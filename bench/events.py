#!/usr/bin/env python3
"""events.py - real-time events benchmark: delivery latency and memory per open stream.

    python3 bench/events.py [--messages 1000] [--senders 4] [--streams 10000]
                            [--users 100] [--memory-auth both|on|off]
                            [--bin build/messenger] [--store lmdb|cassandra]
                            [--server-arg=--cassandra-keyspace=ks ...]

Starts its own server on a free loopback port (fresh data directory, auth on,
cheap Argon2 parameters, --max-connections 20000) and measures:

  1. Delivery latency. A receiver holds `GET /api/events` open (raw socket,
     one reader thread); a sender posts --messages messages one after the
     other with http.client on a keep-alive connection, and for each one
     waits for the SSE event with the same message_id before the next send.
     Reported, in ms, p50/p90/p99/max of:
       - "201 -> event": from the moment the sender has read the whole 201
         response to the moment the event's bytes came out of recv() on the
         receiver's stream. The server publishes on commit, so the event can
         come BEFORE the 201 has been read: those values are negative and kept
         as they are (nothing is clamped);
       - "request -> event": from just before the request is written;
       - "request -> 201": the send's own round trip.
     Then the same with --senders threads sending at the same time (each to
     its own receiver, --concurrent-messages in total; --senders 0 skips).
  2. Memory with --streams open event streams. --users accounts (registered
     and logged in; with auth off: `?user_id=`), the streams spread over
     them round-robin, opened with non-blocking sockets in one thread
     (selectors), each checked for its `retry: 2000` preamble. The server's
     RssAnon and VmRSS (/proc/PID/status) are read before opening them, while
     they are held, and after closing them. While they are held, user 0 sends
     one message to user 1: every stream of those two users must get it, no
     other stream may. After closing: /health, and a new stream gets a new
     message. --memory-auth both (the default) runs this on an auth-on and on
     an auth-off server.
  3. Shutdown: a few streams are left open, the server gets SIGTERM: the
     streams must end and the server must exit 0.

Prints a table; writes bench/results/events-<time>.json. Everything talks to
127.0.0.1 only; every wait has a timeout, and --time-limit (600 s) bounds the
whole run. Python standard library only.
"""
import argparse
import datetime
import errno
import http.client
import json
import math
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
PASSWORD = "bench-password-1"

now_ns = time.perf_counter_ns


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ helpers

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = hard if hard != resource.RLIM_INFINITY and hard < want else want
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def proc_status(pid):
    """RssAnon, VmRSS, RssFile (KiB) and Threads of a process, plus its open fds."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[name + "_kib"] = int(value.split()[0])
            elif name == "Threads":
                out["threads"] = int(value)
    try:
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


def pct(values, p):
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return None
    k = max(0, math.ceil(p / 100.0 * len(values)) - 1)
    return values[min(k, len(values) - 1)]


def summary_ms(ns_values):
    v = sorted(x / 1e6 for x in ns_values)
    if not v:
        return {"n": 0}
    return {"n": len(v), "p50": round(pct(v, 50), 4), "p90": round(pct(v, 90), 4),
            "p99": round(pct(v, 99), 4), "max": round(v[-1], 4), "min": round(v[0], 4),
            "mean": round(sum(v) / len(v), 4)}


def machine_info():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def out(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "kernel": os.uname().release,
            "python": sys.version.split()[0], "git_commit": out("git", "rev-parse", "--short", "HEAD"),
            "git_dirty": bool(out("git", "status", "--porcelain", "--untracked-files=no")),
            "loadavg_at_start": open("/proc/loadavg").read().split()[:3]}


# ------------------------------------------------------------------ server

class Server:
    def __init__(self, args, auth):
        self.args = args
        self.auth = auth
        self.port = args.port or free_port()
        self.tmp = tempfile.mkdtemp(prefix="events-bench-")
        self.errlog = open(os.path.join(self.tmp, "server.log"), "w+b")
        self.cmd = [str(args.bin), "serve", "--listen", f"{HOST}:{self.port}",
                    "--data-dir", os.path.join(self.tmp, "data"),
                    "--argon2-memory-kib", "1024", "--argon2-iterations", "1",
                    "--log-level", "warn", "--max-connections", str(args.max_connections),
                    "--auth", auth, "--store", args.store] + list(args.server_arg)
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("MESSENGER_"):
                del env[k]   # the flags above decide, not the caller's environment
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.errlog, env=env)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} at start: {self.log_text()}")
            try:
                st, _ = self.request("GET", "/health", timeout=2)
                if st == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /health within 60 s")
            time.sleep(0.05)

    def request(self, method, path, body=None, token=None, timeout=10):
        c = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            if token:
                headers["Authorization"] = "Bearer " + token
            c.request(method, path, json.dumps(body) if body is not None else None, headers)
            r = c.getresponse()
            data = r.read()
            return r.status, (json.loads(data) if data else None)
        finally:
            c.close()

    def log_text(self):
        self.errlog.flush()
        self.errlog.seek(0)
        return self.errlog.read().decode("utf-8", "replace")

    def stop(self, timeout=20):
        """SIGTERM; returns (exit code or None, seconds)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        return rc, round(time.monotonic() - t0, 3)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def make_users(srv, n, prefix):
    """n accounts: list of (user_id, token or None)."""
    users = []
    for i in range(n):
        name = f"{prefix}{i:05d}"
        body = {"username": name}
        if srv.auth == "on":
            body["password"] = PASSWORD
        st, u = srv.request("POST", "/api/users", body)
        if st != 201:
            raise RuntimeError(f"POST /api/users {name}: {st} {u}")
        token = None
        if srv.auth == "on":
            st, r = srv.request("POST", "/api/auth/login", {"username": name, "password": PASSWORD})
            if st != 200:
                raise RuntimeError(f"login {name}: {st} {r}")
            token = r["access_token"]
        users.append((u["user_id"], token))
    return users


def events_request(user):
    user_id, token = user
    if token:
        return (f"GET /api/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
                f"Authorization: Bearer {token}\r\n\r\n").encode()
    return (f"GET /api/events?user_id={user_id} HTTP/1.1\r\nHost: bench\r\n"
            f"Accept: text/event-stream\r\n\r\n").encode()


# ------------------------------------------------------------------ SSE client

class Stream:
    """One GET /api/events connection: HTTP head, chunked decoding, SSE blocks."""
    __slots__ = ("sock", "user", "req", "state", "head", "status", "chunked", "cbuf", "cstate", "cleft",
                 "text", "got_retry", "events", "heartbeats", "resets", "other", "eof", "error",
                 "body_ended", "first_block_ok")

    def __init__(self, user):
        self.sock = None
        self.user = user            # index into the users list
        self.req = b""
        self.state = "new"          # new, connecting, head, open, closed
        self.head = b""
        self.status = None
        self.chunked = False
        self.cbuf = b""
        self.cstate = "size"
        self.cleft = 0
        self.text = b""
        self.got_retry = False
        self.first_block_ok = None  # the first block is exactly "retry: 2000"
        self.events = []            # (message_id, ts_ns, data bytes)
        self.heartbeats = 0
        self.resets = 0
        self.other = 0
        self.eof = False
        self.error = None
        self.body_ended = False     # the chunked terminator was seen

    def feed(self, data, ts):
        """Feeds received bytes; returns the new message events [(id, ts, data)]."""
        if self.status is None:
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                if len(self.head) > 65536:
                    self.error = "response head too long"
                return []
            head, data = self.head[:i], self.head[i + 4:]
            self.head = b""
            lines = head.split(b"\r\n")
            try:
                self.status = int(lines[0].split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.status = -1
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
            if self.status != 200:
                self.error = f"status {self.status}: {head[:200]!r} {data[:200]!r}"
                return []
        body = self._dechunk(data) if self.chunked else data
        if not body:
            return []
        self.text += body
        out = []
        while True:
            i = self.text.find(b"\n\n")
            if i < 0:
                break
            block, self.text = self.text[:i], self.text[i + 2:]
            if self.first_block_ok is None:
                self.first_block_ok = block == b"retry: 2000"
            ev_id = ev_type = ev_data = None
            for line in block.split(b"\n"):
                if line.startswith(b":"):
                    self.heartbeats += 1
                elif line.startswith(b"retry:"):
                    self.got_retry = True
                elif line.startswith(b"id: "):
                    ev_id = line[4:].decode()
                elif line.startswith(b"event: "):
                    ev_type = line[7:]
                elif line.startswith(b"data: "):
                    ev_data = line[6:]
            if ev_type == b"message":
                out.append((ev_id, ts, ev_data))
            elif ev_type == b"reset":
                self.resets += 1
            elif ev_type is not None:
                self.other += 1
        if out:
            self.events.extend(out)
        return out

    def _dechunk(self, data):
        self.cbuf += data
        out = []
        while self.cbuf:
            if self.cstate == "size":
                i = self.cbuf.find(b"\r\n")
                if i < 0:
                    break
                try:
                    size = int(self.cbuf[:i].split(b";")[0], 16)
                except ValueError:
                    self.error = f"bad chunk size {self.cbuf[:i][:40]!r}"
                    self.cbuf = b""
                    break
                self.cbuf = self.cbuf[i + 2:]
                if size == 0:
                    self.body_ended = True
                    self.cbuf = b""
                    break
                self.cleft, self.cstate = size, "data"
            elif self.cstate == "data":
                take = self.cbuf[:self.cleft]
                out.append(take)
                self.cbuf = self.cbuf[len(take):]
                self.cleft -= len(take)
                if self.cleft == 0:
                    self.cstate = "crlf"
            else:
                if len(self.cbuf) < 2:
                    break
                self.cbuf = self.cbuf[2:]
                self.cstate = "size"
        return b"".join(out)


def open_blocking(port, stream, user, timeout=10):
    """Opens one stream with a blocking socket and reads up to its preamble."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(events_request(user))
    stream.sock = s
    while not stream.got_retry:
        data = s.recv(65536)
        if not data:
            raise RuntimeError("stream closed before its preamble")
        stream.feed(data, now_ns())
        if stream.error:
            raise RuntimeError(f"stream: {stream.error}")
    s.setblocking(False)
    stream.state = "open"
    return stream


class StreamSet:
    """Many streams on one selector, driven by one thread."""

    def __init__(self, port, users):
        self.port = port
        self.users = users
        self.sel = selectors.DefaultSelector()
        self.streams = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.arrivals = {}           # message_id -> [ts, ...] (one per stream that got it)
        self.stop_flag = False
        self.thread = None
        self.failed = []

    # -- opening many at once (non-blocking connect)
    def open_many(self, n, concurrency, deadline):
        pending = [Stream(i % len(self.users)) for i in range(n)]
        pending.reverse()
        in_flight = 0
        opened = 0
        while (pending or in_flight) and time.monotonic() < deadline:
            while pending and in_flight < concurrency:
                st = pending.pop()
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                st.sock = s
                st.req = events_request(self.users[st.user])
                err = s.connect_ex((HOST, self.port))
                if err not in (0, errno.EINPROGRESS):
                    st.error = f"connect: {os.strerror(err)}"
                    s.close()
                    self.failed.append(st)
                    continue
                st.state = "connecting"
                self.sel.register(s, selectors.EVENT_WRITE, st)
                in_flight += 1
            for key, _ in self.sel.select(timeout=0.5):
                st = key.data
                if st.state == "connecting":
                    err = st.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        st.error = f"connect: {os.strerror(err)}"
                    else:
                        try:
                            sent = st.sock.send(st.req)
                            if sent != len(st.req):
                                st.error = "short send of the request"
                        except OSError as e:
                            st.error = f"send: {e}"
                    if st.error:
                        self._drop(st)
                        in_flight -= 1
                        continue
                    st.state = "head"
                    self.sel.modify(st.sock, selectors.EVENT_READ, st)
                else:
                    self._read(st)
                    if st.state == "closed":
                        in_flight -= 1
                    elif st.got_retry and st.state == "head":
                        st.state = "open"
                        self.streams.append(st)
                        in_flight -= 1
                        opened += 1
        for key in list(self.sel.get_map().values()):   # deadline passed: whatever is still in flight
            st = key.data
            if st.state != "open":
                st.error = st.error or "not open before the deadline"
                self._drop(st)
        for st in pending:
            st.error = "not started before the deadline"
            self.failed.append(st)
        return opened

    def add(self, st):
        self.streams.append(st)
        self.sel.register(st.sock, selectors.EVENT_READ, st)

    def _drop(self, st):
        try:
            self.sel.unregister(st.sock)
        except (KeyError, ValueError):
            pass
        st.sock.close()
        st.state = "closed"
        self.failed.append(st)

    def _read(self, st):
        try:
            data = st.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            st.error = f"recv: {e}"
            data = b""
        ts = now_ns()
        if not data:
            st.eof = True
            try:
                self.sel.unregister(st.sock)
            except (KeyError, ValueError):
                pass
            if st.state != "open":
                st.error = st.error or "closed before its preamble"
                st.sock.close()
                st.state = "closed"
                self.failed.append(st)
            return
        evs = st.feed(data, ts)
        if st.error and st.state != "open":
            self._drop(st)
            return
        if evs:
            with self.cond:
                for mid, t, _ in evs:
                    self.arrivals.setdefault(mid, []).append(t)
                self.cond.notify_all()

    # -- holding (background thread)
    def start(self):
        self.stop_flag = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop_flag:
            for key, _ in self.sel.select(timeout=0.1):
                self._read(key.data)

    def stop(self):
        self.stop_flag = True
        if self.thread:
            self.thread.join(5)

    def wait_for(self, mid, count, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: len(self.arrivals.get(mid, ())) >= count, timeout)

    def close_all(self):
        for st in self.streams:
            try:
                self.sel.unregister(st.sock)
            except (KeyError, ValueError):
                pass
            st.sock.close()
            st.state = "closed"
        self.sel.close()


# ------------------------------------------------------------------ 1. latency

def send_body(srv, sender, receiver, k):
    body = {"receiver_id": receiver[0], "content": f"events bench message {k}",
            "client_message_id": str(uuid.uuid4())}
    if srv.auth == "off":
        body["sender_id"] = sender[0]
    headers = {"Content-Type": "application/json"}
    if sender[1]:
        headers["Authorization"] = "Bearer " + sender[1]
    return json.dumps(body).encode(), headers


def latency_run(srv, n_messages, n_senders, event_timeout, label, deadline):
    """n_senders threads, each sending to its own receiver; returns a result dict."""
    users = make_users(srv, 2 * n_senders, f"lat{uuid.uuid4().hex[:6]}_")
    senders, receivers = users[:n_senders], users[n_senders:]
    sset = StreamSet(srv.port, users)
    for i, r in enumerate(receivers):
        sset.add(open_blocking(srv.port, Stream(n_senders + i), r))
    sset.start()

    per_sender = [n_messages // n_senders + (1 if i < n_messages % n_senders else 0) for i in range(n_senders)]
    samples = [[] for _ in range(n_senders)]     # (t_start, t_201, t_event or None, message_id)
    errors = []
    rest_bodies = {}

    def sender_thread(i):
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=10)
        for k in range(per_sender[i]):
            if time.monotonic() > deadline:
                errors.append("time limit reached")
                break
            body, headers = send_body(srv, senders[i], receivers[i], k)
            try:
                t0 = now_ns()
                conn.request("POST", "/api/messages/", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                t1 = now_ns()
            except (OSError, http.client.HTTPException) as e:
                errors.append(f"sender {i}: {e!r}")
                conn.close()
                conn = http.client.HTTPConnection(HOST, srv.port, timeout=10)
                continue
            if resp.status != 201:
                errors.append(f"sender {i}: status {resp.status} {data[:200]!r}")
                continue
            mid = json.loads(data)["message_id"]
            rest_bodies[mid] = data
            got = sset.wait_for(mid, 1, event_timeout)
            with sset.lock:
                t2 = sset.arrivals[mid][0] if got else None
            samples[i].append((t0, t1, t2, mid))
        conn.close()

    t_run = time.monotonic()
    threads = [threading.Thread(target=sender_thread, args=(i,)) for i in range(n_senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t_run
    time.sleep(0.2)   # late duplicates, if any
    sset.stop()

    all_s = [x for s in samples for x in s]
    ok = [x for x in all_s if x[2] is not None]
    # checks: each receiver's stream got exactly its own messages, once each, with the REST body
    expected = {i: {x[3] for x in samples[i]} for i in range(n_senders)}
    dup = foreign = mismatched = 0
    for i, st in enumerate(sset.streams):
        seen = set()
        for mid, _, data in st.events:
            if mid in seen:
                dup += 1
            seen.add(mid)
            if mid not in expected[i]:
                foreign += 1
            elif rest_bodies.get(mid, b"").rstrip(b"\n") != data:
                mismatched += 1
    sset.close_all()
    res = {
        "label": label, "senders": n_senders, "messages_sent": len(all_s),
        "events_received": len(ok), "lost": len(all_s) - len(ok), "send_errors": len(errors),
        "first_errors": errors[:5], "duplicates": dup, "foreign_events": foreign,
        "event_data_differs_from_rest_body": mismatched, "wall_seconds": round(wall, 3),
        "sends_per_second": round(len(all_s) / wall, 1) if wall else None,
        "event_before_201": sum(1 for x in ok if x[2] < x[1]),
        "ms": {
            "201_to_event": summary_ms([x[2] - x[1] for x in ok]),
            "request_to_event": summary_ms([x[2] - x[0] for x in ok]),
            "request_to_201": summary_ms([x[1] - x[0] for x in all_s]),
        },
    }
    return res


# ------------------------------------------------------------------ 2. memory

def memory_run(srv, args, deadline):
    res = {"auth": srv.auth, "streams_wanted": args.streams, "users": args.users}
    t0 = time.monotonic()
    users = make_users(srv, args.users, f"mem{uuid.uuid4().hex[:6]}_")
    res["users_seconds"] = round(time.monotonic() - t0, 2)
    time.sleep(1.0)
    res["before"] = proc_status(srv.pid)

    sset = StreamSet(srv.port, users)
    t0 = time.monotonic()
    opened = sset.open_many(args.streams, args.connect_concurrency, min(deadline, time.monotonic() + 180))
    res["open_seconds"] = round(time.monotonic() - t0, 2)
    res["streams_open"] = opened
    res["streams_failed"] = len(sset.failed)
    res["first_failures"] = sorted({st.error for st in sset.failed if st.error})[:5]
    res["preamble_ok"] = sum(1 for st in sset.streams if st.got_retry and st.first_block_ok)
    sset.start()
    time.sleep(args.settle)
    res["held"] = proc_status(srv.pid)

    # sanity: user 0 sends to user 1 while everything is open
    want = [st for st in sset.streams if st.user in (0, 1)]
    body, headers = send_body(srv, users[0], users[1], 0)
    conn = http.client.HTTPConnection(HOST, srv.port, timeout=10)
    t_req = now_ns()
    conn.request("POST", "/api/messages/", body, headers)
    resp = conn.getresponse()
    data = resp.read()
    t_201 = now_ns()
    conn.close()
    sanity = {"status": resp.status, "expected_streams": len(want)}
    if resp.status == 201:
        mid = json.loads(data)["message_id"]
        sset.wait_for(mid, len(want), 10.0)
        time.sleep(0.5)     # anything that should not arrive
        with sset.lock:
            ts = list(sset.arrivals.get(mid, ()))
        got = sum(1 for st in want if any(e[0] == mid for e in st.events))
        wrong = sum(1 for st in sset.streams if st.user not in (0, 1) and any(e[0] == mid for e in st.events))
        sanity.update({"received": got, "received_by_other_users": wrong,
                       "ms_201_to_first": round((min(ts) - t_201) / 1e6, 3) if ts else None,
                       "ms_201_to_last": round((max(ts) - t_201) / 1e6, 3) if ts else None,
                       "ms_request_to_201": round((t_201 - t_req) / 1e6, 3)})
        sanity["ok"] = got == len(want) and wrong == 0
    else:
        sanity["detail"] = data[:200].decode("utf-8", "replace")
        sanity["ok"] = False
    res["sanity_message"] = sanity
    res["held_after_message"] = proc_status(srv.pid)

    # every stream gets its keep-alive comment (default every 15 s)
    if args.heartbeat_wait > 0:
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.heartbeat_wait:
            if all(st.heartbeats for st in sset.streams):
                break
            time.sleep(0.2)
        time.sleep(0.5)
        res["heartbeat"] = {"streams_with_heartbeat": sum(1 for st in sset.streams if st.heartbeats),
                            "waited_seconds": round(time.monotonic() - t0, 2)}
        res["held_after_heartbeat"] = proc_status(srv.pid)

    sset.stop()
    res["dropped_while_held"] = sum(1 for st in sset.streams if st.eof)
    res["heartbeats_seen"] = sum(st.heartbeats for st in sset.streams)
    res["resets_seen"] = sum(st.resets for st in sset.streams)
    held_fds = res["held"].get("fds", 0)
    sset.close_all()

    # The server releases a stream when it notices the close. An idle stream is
    # a suspended connection that the server only touches to write a heartbeat,
    # so that can take up to two heartbeat intervals (the first write after the
    # close still succeeds, the peer answers it with a reset). Wait until the
    # server's fds are back near the baseline, at most --close-wait seconds.
    t0 = time.monotonic()
    time.sleep(1.0)
    res["after_1s"] = proc_status(srv.pid)
    base_fds = res["before"].get("fds", 0)
    res["streams_released"] = wait_released(srv, base_fds, args.close_wait - 1.0)
    res["close_seconds"] = round(time.monotonic() - t0, 2)
    time.sleep(1.0)
    res["after"] = proc_status(srv.pid)

    # --reopen N: open and close the same number of streams N more times; the
    # server's RssAnon after each shows whether the memory is reused or grows
    res["reopen"] = []
    for _ in range(args.reopen):
        if time.monotonic() > deadline - args.close_wait - 30:
            break
        s3 = StreamSet(srv.port, users)
        n3 = s3.open_many(args.streams, args.connect_concurrency, min(deadline, time.monotonic() + 180))
        time.sleep(1.0)
        held3 = proc_status(srv.pid)
        s3.close_all()
        t3 = time.monotonic()
        rel = wait_released(srv, base_fds, args.close_wait)
        time.sleep(1.0)
        res["reopen"].append({"opened": n3, "failed": len(s3.failed), "held_RssAnon_kib": held3["RssAnon_kib"],
                              "released": rel, "release_seconds": round(time.monotonic() - t3 - 1.0, 2),
                              "after_RssAnon_kib": proc_status(srv.pid)["RssAnon_kib"]})

    # healthy afterwards: /health, and a new stream gets a new message
    post = {}
    try:
        post["health"], _ = srv.request("GET", "/health", timeout=5)
        s2 = StreamSet(srv.port, users)
        s2.add(open_blocking(srv.port, Stream(1), users[1]))
        s2.start()
        st_code, m = srv.request("POST", "/api/messages/", json.loads(send_body(srv, users[0], users[1], 1)[0]),
                                 token=users[0][1])
        post["send"] = st_code
        post["event"] = bool(st_code == 201 and s2.wait_for(m["message_id"], 1, 5.0))
        s2.stop()
        s2.close_all()
    except (OSError, RuntimeError, http.client.HTTPException, KeyError, TypeError) as e:
        post["error"] = repr(e)
    post["ok"] = post.get("health") == 200 and post.get("event") is True
    res["after_close_check"] = post

    n = max(opened, 1)
    b, h, a = res["before"], res["held"], res["after"]
    res["per_stream_kib"] = {
        "RssAnon": round((h["RssAnon_kib"] - b["RssAnon_kib"]) / n, 2),
        "VmRSS": round((h["VmRSS_kib"] - b["VmRSS_kib"]) / n, 2),
    }
    res["server_fds_held"] = held_fds
    return res


def wait_released(srv, base_fds, timeout):
    """Waits until the server's open fds are back near base_fds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc_status(srv.pid).get("fds", 0) <= base_fds + 16:
            return True
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------ 3. shutdown

def shutdown_check(srv, n=5):
    users = make_users(srv, 1, f"shut{uuid.uuid4().hex[:6]}_")
    streams = [open_blocking(srv.port, Stream(0), users[0]) for _ in range(n)]
    for st in streams:
        st.sock.setblocking(True)
        st.sock.settimeout(10)
    rc, secs = srv.stop()
    ended = 0
    for st in streams:
        try:
            while True:
                data = st.sock.recv(65536)
                if not data:
                    break
                st.feed(data, now_ns())
            ended += 1
        except OSError:
            pass
        st.sock.close()
    return {"exit_code": rc, "exit_seconds": secs, "streams_open_at_sigterm": n, "streams_ended": ended,
            "streams_with_chunked_terminator": sum(1 for st in streams if st.body_ended)}


# ------------------------------------------------------------------ output

def kib_mib(k):
    return f"{k / 1024:.1f}"


def log_summary(lines):
    """The server's log lines without their time stamps, counted, in order of first appearance."""
    counts = {}
    for line in lines:
        parts = line.split(" ", 1)
        text = parts[1].strip() if len(parts) == 2 and parts[0][:4].isdigit() else line
        counts[text] = counts.get(text, 0) + 1
    return list(counts.items())


def print_tables(out):
    lines = []
    lat = out.get("latency", [])
    if lat:
        lines.append("Delivery latency (ms; receiver's stream, timed with perf_counter_ns; "
                     "negative = event before the 201 was read)")
        lines.append(f"{'run':<22} {'measure':<18} {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} "
                     f"{'min':>8} {'lost':>5}")
        for r in lat:
            for key, name in (("201_to_event", "201 -> event"), ("request_to_event", "request -> event"),
                              ("request_to_201", "request -> 201")):
                m = r["ms"][key]
                if not m.get("n"):
                    lines.append(f"{r['label']:<22} {name:<18} {0:>5}")
                    continue
                lines.append(f"{r['label']:<22} {name:<18} {m['n']:>5} {m['p50']:>8.3f} {m['p90']:>8.3f} "
                             f"{m['p99']:>8.3f} {m['max']:>8.3f} {m['min']:>8.3f} "
                             f"{r['lost'] if key != 'request_to_201' else '':>5}")
            lines.append(f"{'':<22} event before 201: {r['event_before_201']}/{r['events_received']}; "
                         f"{r['sends_per_second']} sends/s; errors {r['send_errors']}, duplicates "
                         f"{r['duplicates']}, foreign {r['foreign_events']}, data != REST body "
                         f"{r['event_data_differs_from_rest_body']}")
        lines.append("")
    mem = out.get("memory", [])
    if mem:
        lines.append("Memory: server RSS with open event streams (MiB; /proc/PID/status)")
        lines.append(f"{'auth':<5} {'streams':>7} {'fail':>5} {'open s':>6} {'anon before':>11} {'anon held':>9} "
                     f"{'anon after':>10} {'KiB/stream':>10} {'VmRSS bef/held/aft':>20} {'fds held':>8} "
                     f"{'sanity':>12} {'after':>6}")
        for r in mem:
            b, h, a = r["before"], r["held"], r["after"]
            s = r["sanity_message"]
            sanity = f"{s.get('received', 0)}/{s['expected_streams']}" + ("" if s.get("ok") else " BAD")
            vm = f"{kib_mib(b['VmRSS_kib'])}/{kib_mib(h['VmRSS_kib'])}/{kib_mib(a['VmRSS_kib'])}"
            lines.append(f"{r['auth']:<5} {r['streams_open']:>7,} {r['streams_failed']:>5} {r['open_seconds']:>6} "
                         f"{kib_mib(b['RssAnon_kib']):>11} {kib_mib(h['RssAnon_kib']):>9} "
                         f"{kib_mib(a['RssAnon_kib']):>10} {r['per_stream_kib']['RssAnon']:>10.2f} {vm:>20} "
                         f"{r['server_fds_held']:>8} {sanity:>12} "
                         f"{'ok' if r['after_close_check']['ok'] else 'BAD':>6}")
            lines.append(f"      preamble ok {r['preamble_ok']:,}, dropped while held {r['dropped_while_held']}, "
                         f"sanity event 201->first {s.get('ms_201_to_first')} ms, ->last {s.get('ms_201_to_last')} "
                         f"ms, other users got it: {s.get('received_by_other_users')}; server released the closed "
                         f"streams (fds back to baseline) after {r['close_seconds']} s; anon 1 s after closing "
                         f"{kib_mib(r['after_1s']['RssAnon_kib'])} MiB")
            if r.get("reopen"):
                rounds = ", ".join(f"{kib_mib(x['held_RssAnon_kib'])}/{kib_mib(x['after_RssAnon_kib'])}"
                                   for x in r["reopen"])
                lines.append(f"      reopened {len(r['reopen'])} more times, anon held/after (MiB): {rounds}")
            if r.get("heartbeat"):
                hb = r["heartbeat"]
                lines.append(f"      keep-alive comment on {hb['streams_with_heartbeat']:,} streams within "
                             f"{hb['waited_seconds']} s; anon then "
                             f"{kib_mib(r['held_after_heartbeat']['RssAnon_kib'])} MiB")
        lines.append("")
    for s in out.get("servers", []):
        sd = s.get("shutdown", {})
        lines.append(f"server auth {s['auth']}: SIGTERM -> exit {sd.get('exit_code')} in {sd.get('exit_seconds')} s, "
                     f"{sd.get('streams_ended')}/{sd.get('streams_open_at_sigterm')} open streams ended; "
                     f"log lines at warn or above: {len(s.get('log_lines', []))}")
        for text, count in log_summary(s.get("log_lines", [])):
            lines.append(f"    {count:>6} x {text}")
    for p in out.get("problems", []):
        lines.append(f"PROBLEM: {p}")
    return "\n".join(lines)


def problems_of(out):
    p = []
    for r in out.get("latency", []):
        if r["lost"] or r["send_errors"] or r["duplicates"] or r["foreign_events"] \
                or r["event_data_differs_from_rest_body"]:
            p.append(f"latency {r['label']}: lost {r['lost']}, send errors {r['send_errors']} {r['first_errors']}, "
                     f"duplicates {r['duplicates']}, foreign {r['foreign_events']}, "
                     f"data differs {r['event_data_differs_from_rest_body']}")
    for r in out.get("memory", []):
        if r["streams_failed"] or r["streams_open"] != r["streams_wanted"]:
            p.append(f"memory auth {r['auth']}: {r['streams_open']} of {r['streams_wanted']} streams opened, "
                     f"{r['streams_failed']} failed: {r['first_failures']}")
        if r["preamble_ok"] != r["streams_open"]:
            p.append(f"memory auth {r['auth']}: {r['streams_open'] - r['preamble_ok']} streams without an exact "
                     f"`retry: 2000` first block")
        for k, x in enumerate(r.get("reopen", [])):
            if x["failed"] or x["opened"] != r["streams_wanted"] or not x["released"]:
                p.append(f"memory auth {r['auth']}: reopen round {k + 1}: {x}")
        hb = r.get("heartbeat")
        if hb and hb["streams_with_heartbeat"] != r["streams_open"]:
            p.append(f"memory auth {r['auth']}: {r['streams_open'] - hb['streams_with_heartbeat']} streams had no "
                     f"keep-alive comment within {hb['waited_seconds']} s")
        if r["dropped_while_held"]:
            p.append(f"memory auth {r['auth']}: {r['dropped_while_held']} streams ended while held")
        if not r["sanity_message"].get("ok"):
            p.append(f"memory auth {r['auth']}: sanity message {r['sanity_message']}")
        if not r.get("streams_released"):
            p.append(f"memory auth {r['auth']}: server still holds {r['after']['fds']} fds "
                     f"{r['close_seconds']} s after the streams were closed ({r['before']['fds']} before)")
        if not r["after_close_check"].get("ok"):
            p.append(f"memory auth {r['auth']}: after closing: {r['after_close_check']}")
    for s in out.get("servers", []):
        sd = s.get("shutdown", {})
        if sd.get("exit_code") != 0:
            p.append(f"server auth {s['auth']}: exit code {sd.get('exit_code')} after SIGTERM")
        if sd and sd.get("streams_ended") != sd.get("streams_open_at_sigterm"):
            p.append(f"server auth {s['auth']}: only {sd.get('streams_ended')} of "
                     f"{sd.get('streams_open_at_sigterm')} streams ended at shutdown")
    return p


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1000, help="sequential sends for the latency run (1000)")
    ap.add_argument("--senders", type=int, default=4,
                    help="concurrent senders for the second latency run (4; 0 skips it)")
    ap.add_argument("--concurrent-messages", type=int, default=None,
                    help="messages of the concurrent run, in total (default: --messages)")
    ap.add_argument("--streams", type=int, default=10000, help="open event streams for the memory run (10000)")
    ap.add_argument("--users", type=int, default=100, help="accounts the streams are spread over (100)")
    ap.add_argument("--memory-auth", choices=("both", "on", "off", "none"), default="both",
                    help="memory run on an auth-on server, an auth-off one, both (default) or none")
    ap.add_argument("--no-latency", action="store_true", help="skip the latency runs")
    ap.add_argument("--bin", type=Path, default=ROOT / "build" / "messenger")
    ap.add_argument("--store", default="lmdb", help="--store of the server (lmdb; cassandra: add --server-arg)")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra server flag, repeatable, e.g. --server-arg=--cassandra-keyspace=bench_ev")
    ap.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    ap.add_argument("--max-connections", type=int, default=20000)
    ap.add_argument("--connect-concurrency", type=int, default=256,
                    help="streams being opened at once in the memory run (256)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between opening the streams and reading RSS")
    ap.add_argument("--heartbeat-wait", type=float, default=20.0,
                    help="seconds to wait, with the streams open, until each has had a keep-alive comment "
                         "(20; the server sends one every 15 s; 0 skips)")
    ap.add_argument("--reopen", type=int, default=0,
                    help="memory run: open and close the streams N more times, RssAnon after each (0; each "
                         "round waits for the server to release the streams, up to 30 s at the default heartbeat)")
    ap.add_argument("--close-wait", type=float, default=40.0,
                    help="seconds to wait for the server to release the closed streams (40: 2 heartbeats + 10)")
    ap.add_argument("--event-timeout", type=float, default=5.0, help="seconds to wait for one event (5)")
    ap.add_argument("--time-limit", type=float, default=600.0, help="the whole run at most (600 s)")
    ap.add_argument("--switch-interval", type=float, default=0.0002,
                    help="sys.setswitchinterval (s): how soon the reader thread gets the GIL (0.0002)")
    args = ap.parse_args()
    if args.concurrent_messages is None:
        args.concurrent_messages = args.messages
    if not args.bin.exists():
        sys.exit(f"events: {args.bin} not found (make -j2)")
    sys.setswitchinterval(args.switch_interval)

    nofile = raise_nofile(args.streams + 256)
    if args.memory_auth != "none" and nofile[0] < args.streams + 64:
        sys.exit(f"events: RLIMIT_NOFILE is {nofile[0]} (hard {nofile[1]}): too low for {args.streams} streams")

    started = time.monotonic()
    deadline = started + args.time_limit
    servers = []

    def watchdog():
        log(f"events: time limit of {args.time_limit:.0f} s reached; killing the server and stopping")
        for s in servers:
            s.kill()
        os._exit(3)

    timer = threading.Timer(args.time_limit + 30, watchdog)
    timer.daemon = True
    timer.start()

    version = subprocess.run([str(args.bin), "--version"], capture_output=True, text=True).stdout.strip()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = {"started": stamp, "machine": machine_info(), "messenger_version": version,
           "rlimit_nofile": list(nofile), "options": {k: (str(v) if isinstance(v, Path) else v)
                                                      for k, v in vars(args).items()},
           "latency": [], "memory": [], "servers": []}

    plan = []
    if not args.no_latency or args.memory_auth in ("both", "on"):
        plan.append("on")
    if args.memory_auth in ("both", "off"):
        plan.append("off")
    for auth in plan:
        log(f"events: starting server (auth {auth}, store {args.store})")
        srv = Server(args, auth)
        servers.append(srv)
        info = {"auth": auth, "command": srv.cmd}
        try:
            if auth == "on" and not args.no_latency:
                log(f"events: latency, {args.messages} sequential sends")
                r = latency_run(srv, args.messages, 1, args.event_timeout, "sequential", deadline)
                out["latency"].append(r)
                if args.senders > 0:
                    log(f"events: latency, {args.concurrent_messages} sends from {args.senders} concurrent senders")
                    r = latency_run(srv, args.concurrent_messages, args.senders, args.event_timeout,
                                    f"concurrent x{args.senders}", deadline)
                    out["latency"].append(r)
            if args.memory_auth in ("both", auth):
                log(f"events: memory, {args.streams} streams over {args.users} users (auth {auth})")
                out["memory"].append(memory_run(srv, args, deadline))
            info["shutdown"] = shutdown_check(srv)
        except Exception as e:     # report what we have, then fail
            info["error"] = repr(e)
            out.setdefault("problems", []).append(f"server auth {auth}: {e!r}")
            info["shutdown"] = {"exit_code": srv.stop()[0]}
        text = srv.log_text()
        info["log_lines"] = [line for line in text.splitlines() if line.strip()]
        info["log_summary"] = [{"text": t, "count": c} for t, c in log_summary(info["log_lines"])]
        servers.remove(srv)
        out["servers"].append(info)
    timer.cancel()

    out["problems"] = out.get("problems", []) + problems_of(out)
    out["seconds"] = round(time.monotonic() - started, 1)
    table = print_tables(out)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"events-{stamp}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{out['seconds']} s; machine: {out['machine']['nproc']} x {out['machine']['cpu_model']}, "
          f"kernel {out['machine']['kernel']}; results: {path.relative_to(ROOT)}")
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
