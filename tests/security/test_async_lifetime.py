"""Async lifetime: a client that goes away while the server works for it.

Threat: a request whose store, token or password completion arrives after
its connection is gone (HEAD, a reset right after the request, a stream
reset as it opens) made the server touch freed memory (issue 12, finding 1).
Every route of the route table is called with HEAD and with a request
followed at once by a TCP reset, ~50 times each, with auth on; the server
must stay up, with no sanitizer report, and keep working. A send whose
client resets while it is in flight is stored exactly once.
"""
import re
import time
import uuid

import pytest

from support.checks import derive_conversation_id
from support.env import REPO_ROOT, WAIT
from support.factories import login, make_account, messages_of, send
from support.raw import connect, read_response, request_bytes, reset, wait_server_read_all
from support.server import assert_alive
from support.sse import EOF, SSEStream

REPEAT = 50
REPEAT_EVENTS = 200   # the stream's set-up races the close most: more tries


def repeats(pattern):
    return REPEAT_EVENTS if pattern == "/api/events" else REPEAT


@pytest.fixture(scope="module")
def srv(start_server):
    # Generous registration limit: the reset loop registers users (harmless
    # if the server does not know the variable).
    return start_server("lifetime", env={"MESSENGER_REGISTER_ATTEMPTS": "1000000"})


@pytest.fixture(scope="module")
def world(srv):
    a, b, c, d = (make_account(srv) for _ in range(4))
    m = send(a, b, "the first message")
    w = dict(a=a, b=b, c=c, d=d, mid=m["message_id"], cid=m["conversation_id"])
    yield w
    for acct in (a, b, c, d):
        acct.close()


def source(i):
    """Spread the connections over loopback addresses, so that no
    per-address limit of the server gets in the way of what is tested."""
    return f"127.0.1.{1 + i % 50}"


def route_table():
    """(method, pattern) of every route in src/api/routes.c's ROUTES."""
    text = (REPO_ROOT / "src" / "api" / "routes.c").read_text()
    block = text[text.index("ROUTES[]"):]
    block = block[:block.index("};")]
    return set(re.findall(r'\{\s*"([A-Z]+)"\s*,\s*"([^"]*)"', block))


def route_cases(w, srv):
    """(method, pattern) -> make(i) -> (method, path, token, body, headers).
    Path parameters are real ids; tokens are valid."""
    a, b = w["a"], w["b"]
    cid, mid = w["cid"], w["mid"]
    # tokens for the logout route, logged in before any reset (so that
    # nothing the resets do to the login limit stops the loop)
    login_client = srv.client()
    spare = [login(login_client, a.username, a.password)["access_token"]
             for _ in range(repeats("/api/auth/logout"))]
    login_client.close()

    def fresh_token(i):
        return spare[i]

    def msg(i):
        return {"receiver_id": b.user_id, "content": f"reset {i} {uuid.uuid4().hex}",
                "client_message_id": f"rst-{uuid.uuid4().hex}"}

    return {
        ("GET", "/"): lambda i: ("GET", "/", None, None, None),
        ("GET", "/health"): lambda i: ("GET", "/health", None, None, None),
        ("GET", "/health/live"): lambda i: ("GET", "/health/live", None, None, None),
        ("GET", "/health/ready"): lambda i: ("GET", "/health/ready", None, None, None),
        ("GET", "/openapi.json"): lambda i: ("GET", "/openapi.json", None, None, None),
        ("GET", "/static/{}"): lambda i: ("GET", "/static/app.js", None, None, None),
        ("POST", "/api/users"): lambda i: (
            "POST", "/api/users", None,
            {"username": f"rst-{uuid.uuid4().hex[:20]}", "password": "pw-" + uuid.uuid4().hex}, None),
        ("GET", "/api/users"): lambda i: ("GET", f"/api/users?username={b.username}", a.token, None, None),
        ("GET", "/api/users/{}"): lambda i: ("GET", f"/api/users/{b.user_id}", a.token, None, None),
        ("POST", "/api/auth/login"): lambda i: (
            "POST", "/api/auth/login", None, {"username": a.username, "password": a.password}, None),
        ("POST", "/api/auth/logout"): lambda i: ("POST", "/api/auth/logout", fresh_token(i), None, None),
        ("GET", "/api/auth/me"): lambda i: ("GET", "/api/auth/me", a.token, None, None),
        ("GET", "/api/events"): lambda i: (
            "GET", "/api/events", a.token, None,
            {"Accept": "text/event-stream", **({"Last-Event-ID": mid} if i % 2 else {})}),
        ("POST", "/api/messages/"): lambda i: ("POST", "/api/messages/", a.token, msg(i), None),
        ("POST", "/api/messages"): lambda i: ("POST", "/api/messages", a.token, msg(i), None),
        ("POST", "/api/messages/send"): lambda i: ("POST", "/api/messages/send", a.token, msg(i), None),
        ("GET", "/api/messages/conversation/{}"): lambda i: (
            "GET", f"/api/messages/conversation/{cid}?limit=5", a.token, None, None),
        ("GET", "/api/messages/conversation/{}/before"): lambda i: (
            "GET", f"/api/messages/conversation/{cid}/before?before_message_id={mid}", a.token, None, None),
        ("GET", "/api/conversations/user/{}"): lambda i: (
            "GET", f"/api/conversations/user/{a.user_id}", a.token, None, None),
        ("GET", "/api/conversations/{}"): lambda i: ("GET", f"/api/conversations/{cid}", a.token, None, None),
    }


def test_a_right_password_login_reset_in_flight_is_not_a_failed_attempt(srv):
    """A login with the right password whose client resets before the answer
    (at once, or once the server has read it) is not a failed attempt:
    6x --login-attempts of them, then the same password still logs in."""
    acct = make_account(srv)
    acct.close()
    body = {"username": acct.username, "password": acct.password}
    for i in range(60):
        s = connect(srv, source=source(i))
        try:
            s.sendall(raw("POST", "/api/auth/login", None, body, None))
            if i >= 40:
                wait_server_read_all(srv, s)
        finally:
            reset(s)
    # logins still in flight hold their attempt (429 meanwhile); once they
    # are done, none of them counts as a failure
    c = srv.client()
    deadline = time.monotonic() + WAIT
    try:
        while True:
            status, resp, headers = c.call("POST", "/api/auth/login", body)
            if status != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        c.close()
    assert status == 200, ("the right password after 60 logins reset in flight", status, resp,
                           headers.get("retry-after"))


def raw(method, path, token, body, headers):
    return request_bytes(method, path, token=token, body=body, headers=headers)


def still_works(srv, w):
    """The server is up, sends work and the event hub delivers."""
    assert_alive(srv)
    s = SSEStream(srv, token=w["b"].token, wait=WAIT, strict_preamble=False)
    try:
        s.open()
        m = send(w["a"], w["b"], "still working " + uuid.uuid4().hex)
        deadline = time.monotonic() + WAIT
        while True:
            blk = s.next_nonheartbeat(deadline - time.monotonic())
            assert blk is not EOF, "the stream ended while a message was expected"
            if blk.id == m["message_id"]:
                break
    finally:
        s.close()


def test_the_cases_cover_the_route_table(srv, world):
    table = route_table()
    assert len(table) >= 18, table
    covered = set(route_cases(world, srv))
    assert table == covered, (f"routes without a case: {sorted(table - covered)}; "
                              f"cases for no route: {sorted(covered - table)}")


def test_head_on_every_route(srv, world):
    cases = route_cases(world, srv)
    for (method, pattern), make in sorted(cases.items()):
        expected = None
        if method == "GET" and pattern != "/api/events":
            # what GET answers, to compare HEAD with
            s = connect(srv)
            try:
                s.sendall(raw(*make(0)))
                r = read_response(s)
            finally:
                s.close()
            assert r is not None, f"GET {pattern}: no answer"
            expected = r.status
        for i in range(repeats(pattern)):
            _, path, token, body, headers = make(i)
            s = connect(srv, source=source(i))
            try:
                s.sendall(raw("HEAD", path, token, None, headers))
                if i % 2:  # half of them: reset at once, without reading
                    reset(s)
                    s = None
                    continue
                r = read_response(s, head_only=True)
                assert r is not None, f"HEAD {path}: no answer"
                assert r.status is not None and r.status < 500, (f"HEAD {path}", r)
                if method == "POST" and ("GET", pattern) not in cases:
                    assert r.status == 405, (f"HEAD on the POST-only route {path}", r)
                elif expected is not None:
                    assert r.status == expected, (f"HEAD {path} answered {r.status}, GET {expected}", r)
                if pattern == "/api/events":
                    continue
                # HEAD has no body: the next request on the connection is
                # read as a request, and its answer is whole
                s.sendall(raw("GET", "/health", None, None, None))
                r2 = read_response(s)
                assert r2 is not None and r2.status == 200, (f"GET /health after HEAD {path}", r2)
                assert r2.json().get("status") == "ok", r2
            finally:
                if s is not None:
                    s.close()
    assert_alive(srv, "after HEAD on every route")
    still_works(srv, world)


@pytest.mark.parametrize("when", ["at-once", "after-head"])
def test_request_then_reset_on_every_route(srv, world, when):
    """`at-once`: the request is sent and the connection reset without
    waiting. `after-head`: the reset comes once the answer (or the event
    stream) has begun."""
    cases = route_cases(world, srv)
    for (method, pattern), make in sorted(cases.items()):
        for i in range(repeats(pattern)):
            req = raw(*make(i))
            s = connect(srv, source=source(i))
            try:
                s.sendall(req)
                if when == "after-head":
                    read_response(s, head_only=True)
            finally:
                reset(s)
    assert_alive(srv, f"after a request then a reset ({when}) on every route")
    still_works(srv, world)


def test_reset_while_the_send_is_in_flight_stores_it_once(srv, world):
    c, d = world["c"], world["d"]
    for i in range(10):
        key = f"inflight-{uuid.uuid4().hex}"
        content = f"in flight {i} {uuid.uuid4().hex}"
        body = {"receiver_id": d.user_id, "content": content, "client_message_id": key}
        s = connect(srv, source=source(i))
        try:
            s.sendall(raw("POST", "/api/messages/", c.token, body, None))
            # the server has read the whole request: the send is its to finish
            assert wait_server_read_all(srv, s), "the server did not read the request"
        finally:
            reset(s)
        # the message shows up in the conversation, once
        deadline = time.monotonic() + WAIT
        found = []
        while time.monotonic() < deadline:
            status, page, _ = c.client.call(
                "GET", f"/api/messages/conversation/{conv(c, d)}?limit=100")
            if status == 200:
                found = [m for m in page["data"] if m["content"] == content]
                if found:
                    break
            time.sleep(0.02)
        assert len(found) == 1, (f"send {i} reset in flight: stored {len(found)} times", found)
        # the retry finds it: 200 with the same message
        status, again, _ = c.client.call("POST", "/api/messages/", body)
        assert status == 200, ("retry of a send reset in flight", status, again)
        assert again == found[0], (again, found[0])
        stored = [m for m in messages_of(c, conv(c, d)) if m["content"] == content]
        assert stored == found, ("after the retry", stored)
    assert_alive(srv)


def test_reset_before_the_server_reads_then_retry_gives_one_message(srv, world):
    c, d = world["c"], world["d"]
    for i in range(20):
        key = f"early-{uuid.uuid4().hex}"
        content = f"early reset {i} {uuid.uuid4().hex}"
        body = {"receiver_id": d.user_id, "content": content, "client_message_id": key}
        s = connect(srv, source=source(i))
        try:
            s.sendall(raw("POST", "/api/messages/", c.token, body, None))
        finally:
            reset(s)
        status, m, _ = c.client.call("POST", "/api/messages/", body)
        assert status in (200, 201), ("retry", status, m)
        status2, m2, _ = c.client.call("POST", "/api/messages/", body)
        assert status2 == 200 and m2 == m, ("second retry", status2, m2, m)
        stored = [x for x in messages_of(c, conv(c, d)) if x["content"] == content]
        assert stored == [m], (f"send {i}: stored {len(stored)} times", stored)
    assert_alive(srv)


def conv(x, y):
    return derive_conversation_id(x.user_id, y.user_id)
