"""Broken object-level authorization.

Threat: a signed-in user C names objects that belong to others (A and B's
conversation, its messages through every cursor, A's conversation list,
A's events) or acts as A (sends with A's sender_id). Every such request is
refused the way README says (404 that looks exactly like a missing object,
403 for a foreign sender), leaks no content, and changes nothing. Requests
with no token or a bad one are 401 with WWW-Authenticate: Bearer.
"""
import secrets
import uuid

import pytest

from support.factories import login, make_account, messages_of, send
from support.raw import exchange, request_bytes
from support.server import assert_alive
from support.sse import EOF


@pytest.fixture(scope="module")
def abc(auth_server):
    """A and B talk; C is a stranger with a conversation of its own with B."""
    a, b, c = (make_account(auth_server) for _ in range(3))
    msgs = [send(a, b, "secret a->b 1"), send(b, a, "secret b->a 2"), send(a, b, "secret a->b 3")]
    own = send(c, b, "c's own message")
    yield dict(a=a, b=b, c=c, msgs=msgs, cid=msgs[0]["conversation_id"], own=own)
    for x in (a, b, c):
        x.close()


def state(w):
    """What A sees of its world: its list, the conversation, its messages."""
    a = w["a"]
    page = a.client.conversations_page(a.user_id)
    status, conv, _ = a.client.call("GET", f"/api/conversations/{w['cid']}")
    assert status == 200, conv
    return page, conv, messages_of(a, w["cid"])


def assert_same_as_missing(c, path_fmt, cid):
    """C asking for cid gets exactly what it gets for a conversation that
    does not exist: 404, same body."""
    ghost = str(uuid.uuid4())
    answers = []
    for target in (cid, ghost):
        status, body, _ = c.client.call("GET", path_fmt.format(target))
        assert status == 404, (path_fmt.format(target), status, body)
        answers.append(c.client.last_raw)
    assert answers[0] == answers[1], (path_fmt, "someone else's conversation looks different from a "
                                      "missing one", answers)
    assert b"secret" not in answers[0], answers[0]


def test_stranger_cannot_read_the_conversation(abc):
    c, cid = abc["c"], abc["cid"]
    assert_same_as_missing(c, "/api/conversations/{}", cid)
    assert_same_as_missing(c, "/api/conversations/{}", cid.upper())


@pytest.mark.parametrize("query", [
    "", "?limit=100", "?limit=1",
    "?before_message_id={last}", "?after_message_id={first}", "?before_message_id={first}",
    "?after_message_id={last}&limit=5", "?before_message_id={own}", "?after_message_id={own}",
    "?after_message_id=00000000-0000-1000-8000-000000000000",
    "?before_message_id=ffffffff-ffff-1fff-bfff-ffffffffffff",
], ids=["none", "limit100", "limit1", "before-last", "after-first", "before-first", "after-last",
        "before-own", "after-own", "after-zero", "before-max"])
@pytest.mark.parametrize("route", ["/api/messages/conversation/{}", "/api/messages/conversation/{}/before"])
def test_stranger_cannot_read_the_messages(abc, route, query):
    c = abc["c"]
    q = query.format(first=abc["msgs"][0]["message_id"], last=abc["msgs"][-1]["message_id"],
                     own=abc["own"]["message_id"])
    assert_same_as_missing(c, route + q, abc["cid"])


def test_stranger_cannot_list_someone_elses_conversations(abc):
    a, c = abc["a"], abc["c"]
    cursor = abc["cid"]
    for path in (f"/api/conversations/user/{a.user_id}",
                 f"/api/conversations/user/{a.user_id.upper()}",
                 f"/api/conversations/user/{a.user_id}?limit=100",
                 f"/api/conversations/user/{a.user_id}?before_conversation_id={cursor}"):
        status, body, _ = c.client.call("GET", path)
        # README: "answers only for the caller's own id": 404 (as for an unknown user)
        assert status == 404, (path, status, body)
        assert b"secret" not in c.client.last_raw and abc["b"].user_id.encode() not in c.client.last_raw
    # and for a user that does not exist, the same answer
    status, body, _ = c.client.call("GET", f"/api/conversations/user/{uuid.uuid4()}")
    assert status == 404, body


def test_stranger_cannot_send_as_someone_else(abc):
    a, b, c = abc["a"], abc["b"], abc["c"]
    before = state(abc)
    for body in ({"sender_id": a.user_id, "receiver_id": b.user_id, "content": "forged"},
                 {"sender_id": a.user_id.upper(), "receiver_id": b.user_id, "content": "forged"},
                 {"sender_id": a.user_id, "receiver_id": c.user_id, "content": "forged"},
                 {"sender_id": b.user_id, "receiver_id": a.user_id, "content": "forged",
                  "client_message_id": "forged-key"}):
        for path in ("/api/messages/", "/api/messages", "/api/messages/send"):
            status, resp, _ = c.client.call("POST", path, body)
            assert status == 403, (path, body, status, resp)
    assert state(abc) == before, "a refused send changed A's world"
    # nothing reached C's own conversation with A either
    status, resp, _ = c.client.call(
        "GET", f"/api/messages/conversation/{abc['own']['conversation_id']}?limit=100")
    assert status == 200 and all(m["content"] != "forged" for m in resp["data"]), resp


def test_stranger_gets_only_its_own_events(auth_server, abc, streams):
    """With auth on there is no way to name another user on /api/events:
    ?user_id=A is ignored and C gets C's events only."""
    a, b, c = abc["a"], abc["b"], abc["c"]
    live = streams(auth_server, token=c.token, query=f"?user_id={a.user_id}").open()
    resumed = streams(auth_server, token=c.token, query=f"?user_id={a.user_id}",
                      last_event_id=abc["own"]["message_id"]).open()
    by_query = streams(auth_server, token=c.token,
                       query=f"?user_id={a.user_id}&last_event_id={abc['own']['message_id']}").open()
    leaked = send(a, b, "secret sent while C listens")
    mine = send(b, c, "for c")
    for name, s in (("live", live), ("resumed", resumed), ("resumed-by-query", by_query)):
        blk = s.next_nonheartbeat()
        assert blk is not EOF, (name, "stream ended")
        # events come in order: a leak of A's message would come first
        assert blk.id == mine["message_id"], (name, "C's stream got something else first", blk)
        assert leaked["content"] not in "".join(v for _, v in blk.fields)
    # a resume from before A's messages replays none of them
    early = streams(auth_server, token=c.token, query=f"?user_id={a.user_id}",
                    last_event_id="00000000-0000-1000-8000-000000000000")
    st = early.wait_status()
    if st == 200:
        marker = send(b, c, "marker")
        seen = []
        for _ in range(10_000):
            blk = early.next_nonheartbeat()
            assert blk is not EOF, "stream ended"
            seen.append(blk.id)
            if blk.id == marker["message_id"]:
                break
        else:
            raise AssertionError("the marker never came")
        theirs = {m["message_id"] for m in abc["msgs"]} | {leaked["message_id"]}
        assert not theirs & set(seen), "C's resume replayed A and B's messages"
    else:
        assert st in (400, 422), (st, early.body[:300])


BAD_AUTH = {
    "none": None,
    "empty-bearer": "Bearer ",
    "garbage": "Bearer garbage",
    "random-43": "Bearer " + secrets.token_urlsafe(32),
    "basic": "Basic dXNlcjpwYXNzd29yZA==",
    "no-scheme": secrets.token_urlsafe(32),
    "long": "Bearer " + "A" * 2000,
    "bearer-twice": "Bearer Bearer " + secrets.token_urlsafe(32),
    "high-bytes": "Bearer \xff\xfe" + "A" * 41,
}


def protected(w):
    a, b, cid = w["a"], w["b"], w["cid"]
    mid = w["msgs"][0]["message_id"]
    body = {"receiver_id": b.user_id, "content": "unauthenticated"}
    return [
        ("GET", f"/api/users/{b.user_id}", None),
        ("GET", f"/api/users?username={b.username}", None),
        ("GET", "/api/auth/me", None),
        ("POST", "/api/auth/logout", None),
        ("GET", "/api/events", None),
        ("POST", "/api/messages/", body),
        ("POST", "/api/messages", body),
        ("POST", "/api/messages/send", body),
        ("GET", f"/api/messages/conversation/{cid}", None),
        ("GET", f"/api/messages/conversation/{cid}/before?before_message_id={mid}", None),
        ("GET", f"/api/conversations/user/{a.user_id}", None),
        ("GET", f"/api/conversations/{cid}", None),
    ]


@pytest.mark.parametrize("auth", list(BAD_AUTH), ids=list(BAD_AUTH))
def test_no_token_or_a_bad_one_is_401(auth_server, abc, auth):
    before = state(abc)
    value = BAD_AUTH[auth]
    for method, path, body in protected(abc):
        headers = {"Authorization": value} if value is not None else {}
        r = exchange(auth_server, request_bytes(method, path, body=body, headers=headers))
        assert r is not None, (auth, method, path, "no answer")
        assert r.status == 401, (auth, method, path, r)
        www = r.header("www-authenticate") or ""
        assert www.split()[:1] == ["Bearer"], (auth, method, path, "WWW-Authenticate", r)
        assert isinstance(r.json().get("detail"), str), r
        assert b"secret" not in r.body
    assert state(abc) == before
    assert_alive(auth_server)


def test_a_logged_out_token_is_401_everywhere(auth_server, abc):
    a = abc["a"]
    c = auth_server.client()
    token = login(c, a.username, a.password)["access_token"]
    c.close()
    r = exchange(auth_server, request_bytes("POST", "/api/auth/logout", token=token))
    assert r.status == 204, r
    for method, path, body in protected(abc):
        r = exchange(auth_server, request_bytes(method, path, token=token, body=body))
        assert r is not None and r.status == 401, (method, path, r)
        assert (r.header("www-authenticate") or "").split()[:1] == ["Bearer"], r
