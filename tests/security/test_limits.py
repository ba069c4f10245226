"""Limits that hold under concurrency.

Threat: an attacker who runs many requests at once gets past a limit that is
checked before the work and recorded after it (issue 12, finding 3: 200
concurrent wrong logins were all evaluated), or exhausts the server with
streams and connections. Checked, each with requests started together on a
barrier, every one on a connection of its own:
- password guesses per username and per client address;
- registrations per client address;
- event streams per user (the oldest is ended);
- open connections per client address.
"""
import collections
import threading
import time
import uuid

import pytest

from support.env import WAIT
from support.factories import login, make_account, register, send
from support.raw import closed_soon, connect, read_response, request_bytes
from support.server import assert_alive
from support.sse import EOF

ATTEMPTS = 10
WINDOW = 3


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


@pytest.fixture(scope="module")
def limited(start_server):
    return start_server("limits", args=("--login-attempts", ATTEMPTS, "--login-window", WINDOW),
                        env={"MESSENGER_REGISTER_ATTEMPTS": ATTEMPTS})


def storm(server, source, bodies, path):
    """POSTs every body at once, each on a connection of its own from source;
    returns the RawResponses (asserting that every request got one)."""
    def prepare(i):
        return connect(server, source=source, timeout=120)

    def act(i, s):
        try:
            s.sendall(request_bytes("POST", path, body=bodies[i]))
            return read_response(s, timeout=120)
        finally:
            s.close()

    results = run_together(len(bodies), prepare, act, timeout=180)
    broken = [(i, r) for i, r in enumerate(results) if not hasattr(r, "status") or r.status is None]
    assert not broken, f"{len(broken)} requests got no answer, e.g. {broken[:3]}"
    return results


def check_refusals(results, evaluated_status, at_most, what):
    """At most `at_most` answers are evaluated_status; every other one is 429
    or 503, with a Retry-After of whole seconds. Returns the Counter."""
    count = collections.Counter(r.status for r in results)
    assert count[evaluated_status] <= at_most, (
        f"{what}: {count[evaluated_status]} answers {evaluated_status} (evaluated), at most {at_most} "
        f"allowed; all answers: {dict(count)}")
    assert count[evaluated_status] >= 1, f"{what}: nothing was evaluated: {dict(count)}"
    others = {s for s in count if s != evaluated_status}
    assert others <= {429, 503}, f"{what}: unexpected answers {dict(count)}"
    for r in results:
        if r.status in (429, 503):
            ra = r.header("retry-after")
            assert ra is not None and ra.isdigit() and int(ra) >= 1, (
                f"{what}: {r.status} without a Retry-After of whole seconds", r)
            if r.status == 429:
                assert int(ra) <= WINDOW + 1, (f"{what}: Retry-After beyond the window", r)
            body = r.json()
            assert isinstance(body.get("detail"), str), r
    return count


def post(server, source, path, body):
    s = connect(server, source=source)
    try:
        s.sendall(request_bytes("POST", path, body=body))
        r = read_response(s)
    finally:
        s.close()
    assert r is not None and r.status is not None, (path, "no answer")
    return r


def until_accepted(server, source, path, body, ok_status, limit_s):
    """Repeats the request, waiting what Retry-After says between tries,
    until it is answered ok_status; bounded by limit_s."""
    deadline = time.monotonic() + limit_s
    seen = []
    while True:
        r = post(server, source, path, body)
        seen.append(r.status)
        if r.status == ok_status:
            return r
        assert r.status in (429, 503), (path, r)
        ra = int(r.header("retry-after") or "1")
        left = deadline - time.monotonic()
        assert left > 0, f"{path} still refused after {limit_s} s: {seen}"
        time.sleep(min(ra, left))  # the server says when to come back


def test_concurrent_wrong_passwords_for_one_username(limited):
    c = limited.client()
    user, password = register(c)
    c.close()
    bodies = [{"username": user["username"], "password": f"wrong-password-{i}"} for i in range(200)]
    results = storm(limited, "127.0.0.11", bodies, "/api/auth/login")
    check_refusals(results, 401, ATTEMPTS, "200 wrong passwords for one username")
    # once the window has passed, the right password works
    r = until_accepted(limited, "127.0.0.11", "/api/auth/login",
                       {"username": user["username"], "password": password}, 200, WINDOW + 10)
    assert r.json()["user"]["user_id"] == user["user_id"], r
    assert_alive(limited)


def test_concurrent_wrong_logins_from_one_address_across_usernames(limited):
    c = limited.client()
    user, password = register(c)
    c.close()
    bodies = [{"username": f"nobody-{uuid.uuid4().hex[:12]}", "password": f"wrong-password-{i}"}
              for i in range(200)]
    results = storm(limited, "127.0.0.12", bodies, "/api/auth/login")
    check_refusals(results, 401, 5 * ATTEMPTS, "200 wrong logins for 200 usernames from one address")
    r = until_accepted(limited, "127.0.0.12", "/api/auth/login",
                       {"username": user["username"], "password": password}, 200, WINDOW + 10)
    assert r.json()["user"]["user_id"] == user["user_id"], r
    assert_alive(limited)


def test_concurrent_registrations_from_one_address(limited):
    names = [f"reg-{uuid.uuid4().hex[:16]}" for _ in range(100)]
    bodies = [{"username": n, "password": "pw-" + uuid.uuid4().hex} for n in names]
    results = storm(limited, "127.0.0.13", bodies, "/api/users")
    check_refusals(results, 201, ATTEMPTS, "100 registrations from one address")
    # a refused registration wrote nothing; an accepted one is there
    reader = make_account(limited)
    try:
        for name, r in zip(names, results):
            status, body, _ = reader.client.call("GET", f"/api/users?username={name}")
            if r.status == 201:
                assert status == 200 and body == r.json(), (name, status, body)
            else:
                assert status == 404, (f"registration answered {r.status}, yet the user exists", body)
    finally:
        reader.close()
    # after the window, registering works again
    r = until_accepted(limited, "127.0.0.13", "/api/users",
                       {"username": f"reg-{uuid.uuid4().hex[:16]}", "password": "pw-" + uuid.uuid4().hex},
                       201, WINDOW + 10)
    assert r.json()["username"].startswith("reg-"), r
    assert_alive(limited)


# --------------------------------------------------------------------------
# event streams per user
# --------------------------------------------------------------------------

def _stream_cap(server, streams, cap):
    a, b = make_account(server), make_account(server)
    try:
        c = server.client()
        second = login(c, a.username, a.password)["access_token"]
        c.close()
        # the cap is per user, whatever the token: half on each
        tokens = [a.token if i % 2 == 0 else second for i in range(cap + 2)]
        opened = []
        for i in range(cap):
            opened.append(streams(server, token=tokens[i]).open())
        watcher = streams(server, token=b.token).open()   # another user's stream
        for i, s in enumerate(opened):
            assert not s.ended, f"stream {i + 1} of {cap} ended before the cap was reached"
        # one more: the oldest ends
        opened.append(streams(server, token=tokens[cap]).open())
        assert opened[0].wait_eof(WAIT), f"stream {cap + 1} opened, the oldest is still open"
        live = opened[1:]
        for i, s in enumerate(live):
            assert not s.ended, f"stream {i + 2} ended; only the oldest should"
        m = send(b, a, "to every open stream")
        for i, s in enumerate(live + [watcher]):
            blk = s.next_nonheartbeat()
            assert blk is not EOF, f"open stream {i + 1} of {len(live)} ended instead of delivering"
            assert blk.id == m["message_id"], (i, blk)
        # and again: the next oldest goes
        opened.append(streams(server, token=tokens[cap + 1]).open())
        assert opened[1].wait_eof(WAIT), "the second-oldest stream did not end at the next open"
        for i, s in enumerate(opened[2:]):
            assert not s.ended, f"stream {i + 3} ended"
    finally:
        a.close()
        b.close()


@pytest.fixture(scope="module")
def stream_capped(start_server):
    return start_server("streamcap", env={"MESSENGER_MAX_STREAMS_PER_USER": "4"})


def test_a_fifth_stream_ends_the_oldest(stream_capped, streams):
    _stream_cap(stream_capped, streams, 4)
    assert_alive(stream_capped)


def test_default_stream_cap_is_16(limited, streams):
    _stream_cap(limited, streams, 16)


# --------------------------------------------------------------------------
# connections per address
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conn_capped(start_server):
    return start_server("conncap", env={"MESSENGER_MAX_CONNECTIONS_PER_ADDRESS": "8"})


def health_on(sock):
    sock.sendall(request_bytes("GET", "/health"))
    return read_response(sock)


def test_connections_per_address(conn_capped):
    held = []
    try:
        for i in range(8):
            s = connect(conn_capped)
            r = health_on(s)
            assert r is not None and r.status == 200, (f"connection {i + 1} of 8", r)
            held.append(s)
        # the 9th from 127.0.0.1: refused, or closed at once
        try:
            s9 = connect(conn_capped, timeout=5)
        except ConnectionError:
            s9 = None
        if s9 is not None:
            try:
                try:
                    s9.sendall(request_bytes("GET", "/health"))
                except OSError:
                    pass
                r = read_response(s9, timeout=3)
                assert r is None or r.status != 200, ("a 9th connection from 127.0.0.1 was served", r)
                assert closed_soon(s9, 3), "the 9th connection from 127.0.0.1 was neither refused nor closed"
            finally:
                s9.close()
        # another address is not limited by 127.0.0.1's connections
        other = connect(conn_capped, source="127.0.0.2")
        try:
            r = health_on(other)
            assert r is not None and r.status == 200, ("a connection from 127.0.0.2", r)
        finally:
            other.close()
        # the 8 held are still served
        for i, s in enumerate(held):
            r = health_on(s)
            assert r is not None and r.status == 200, (f"held connection {i + 1} after the refusal", r)
        # closing two frees room
        for s in held[:2]:
            s.close()
        held = held[2:]
        deadline = time.monotonic() + WAIT
        while True:
            try:
                s = connect(conn_capped, timeout=5)
                r = health_on(s)
            except OSError:
                r = None
                s = None
            if r is not None and r.status == 200:
                held.append(s)
                break
            if s is not None:
                s.close()
            assert time.monotonic() < deadline, "closing two of the 8 connections made no room"
            time.sleep(0.05)
    finally:
        for s in held:
            s.close()
    assert_alive(conn_capped)
