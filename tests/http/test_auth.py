"""Accounts and access control (issue 5): registration with a password,
login, logout, bearer tokens on every protected route, who may read what,
the login rate limit, and the open API with auth off.

Most tests share the module's auth_server (auth on, fast password hashing);
token expiry, the rate limit and the auth-off/on switch get servers of their
own. Every test uses fresh usernames."""
import base64
import http.client
import re
import time
import uuid

import pytest

from support.checks import check_time, derive_conversation_id, now_ms, parse_time
from support.client import Client
from support.factories import login, make_account, new_password, new_username, register
from support.server import FAST_ARGON2, ServerProcess

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
NOT_AUTHENTICATED = "Not authenticated"
INVALID_TOKEN = "Invalid or expired token"
BAD_LOGIN = "Incorrect username or password"
TOO_MANY = "Too many failed login attempts; try again later"
CONV_NOT_FOUND = "Conversation not found"
USER_NOT_FOUND = "User not found"
SENDER_MISMATCH = "sender_id must be the authenticated user"
DEFAULT_TTL = 604800


def assert_401(status, body, headers, detail, what=""):
    assert status == 401, (what, status, body)
    assert body == {"detail": detail}, (what, body)
    www = headers.get("www-authenticate")
    assert www is not None, f"{what}: 401 without WWW-Authenticate"
    assert www.split()[:1] == ["Bearer"], (what, "WWW-Authenticate must be Bearer", www)


@pytest.fixture(scope="module")
def anon(auth_server):
    c = auth_server.client()
    yield c
    c.close()


def try_login(c, username, password):
    return c.call("POST", "/api/auth/login", {"username": username, "password": password})


# --------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------

def test_register_needs_a_password_when_auth_is_on(anon):
    name = new_username()
    for body in ({"username": name}, {"username": name, "password": None},
                 {"username": name, "password": 12345678}, {"username": name, "password": ["x" * 8]}):
        status, resp, _ = anon.call("POST", "/api/users", body)
        assert status == 422, (body, status, resp)
        assert isinstance(resp, dict) and isinstance(resp.get("detail"), str), resp
        assert resp["detail"].startswith("password"), resp
    # none of those created the user
    user, _ = register(anon, name)
    assert user["username"] == name


@pytest.mark.parametrize("password,ok", [
    ("x" * 7, False),
    ("x" * 8, True),
    ("x" * 1024, True),
    ("x" * 1025, False),
    ("", False),
    ("\u00e9" * 3, False),      # 3 characters, 6 bytes
    ("\u00e9" * 4, True),       # 4 characters, 8 bytes
    ("\u00e9" * 512, True),     # 1024 bytes
    ("\u00e9" * 513, False),    # 513 characters but 1026 bytes
    ("\U0001F600" * 2, True),   # 2 characters, 8 bytes
])
def test_password_length_is_8_to_1024_bytes(anon, password, ok):
    name = new_username()
    status, body, _ = anon.call("POST", "/api/users", {"username": name, "password": password})
    if ok:
        assert status == 201, (len(password.encode()), status, body)
        assert set(body) == {"user_id", "username"}, body
        # and the password works
        lg = login(anon, name, password)
        assert lg["user"]["user_id"] == body["user_id"]
    else:
        assert status == 422, (len(password.encode()), status, body)
        assert body["detail"].startswith("password: "), body
        register(anon, name)  # the refused registration did not take the name


def test_registration_answer_leaks_no_secret(anon, new_account):
    name, pw = new_username(), new_password()
    status, body, _ = anon.call("POST", "/api/users", {"username": name, "password": pw})
    assert status == 201, body
    assert set(body) == {"user_id", "username"}, body
    assert pw.encode() not in anon.last_raw
    me = new_account()
    status, body, _ = me.client.call("GET", f"/api/users/{body['user_id']}")
    assert status == 200 and set(body) == {"user_id", "username"}, body
    assert pw.encode() not in me.client.last_raw and b"argon" not in me.client.last_raw.lower()


def test_duplicate_usernames_are_409_case_insensitively(anon):
    name = new_username("Dup")
    register(anon, name)
    for other in (name, name.lower(), name.upper()):
        status, body, _ = anon.call("POST", "/api/users", {"username": other, "password": new_password()})
        assert status == 409, (other, status, body)
        assert isinstance(body.get("detail"), str), body


def test_register_is_open_and_works_with_a_token_too(anon, new_account):
    me = new_account()
    user, pw = register(me.client)  # a logged-in user may register another account
    login(anon, user["username"], pw)


# --------------------------------------------------------------------------
# login
# --------------------------------------------------------------------------

def test_login_answer(anon):
    name = new_username("Login")
    user, pw = register(anon, name)
    before = now_ms()
    status, body, headers = try_login(anon, name, pw)
    assert status == 200, body
    assert set(body) == {"access_token", "token_type", "expires_at", "user"}, body
    assert TOKEN_RE.match(body["access_token"]), body["access_token"]
    raw = base64.urlsafe_b64decode(body["access_token"] + "=")
    assert len(raw) == 32
    assert body["token_type"] == "bearer"
    assert body["user"] == user
    exp = check_time(body["expires_at"])
    assert before + DEFAULT_TTL * 1000 - 5000 <= exp <= now_ms() + DEFAULT_TTL * 1000 + 5000, (
        "expires_at is not about now + the token TTL (7 days)", body["expires_at"])
    assert headers.get("content-type", "").startswith("application/json")


def test_login_username_is_case_insensitive_and_tokens_differ(anon):
    name = new_username("MiXeD")
    user, pw = register(anon, name)
    tokens = set()
    for n in (name, name.lower(), name.upper()):
        body = login(anon, n, pw)
        assert body["user"] == user, body  # the name as registered
        tokens.add(body["access_token"])
    assert len(tokens) == 3, "each login must issue a new token"


def test_wrong_password_and_unknown_user_get_the_same_401(anon):
    name = new_username()
    _, pw = register(anon, name)
    answers = []
    for uname, p in ((name, pw + "x"), (name, pw.upper()), (new_username("nobody"), pw)):
        status, body, headers = try_login(anon, uname, p)
        assert_401(status, body, headers, BAD_LOGIN, f"login {uname!r}")
        answers.append(body)
    assert answers[0] == answers[2]
    login(anon, name, pw)  # still fine


def test_login_with_a_bad_body_is_a_client_error(anon):
    for body in ({}, {"username": "x"}, {"password": "12345678"}, {"username": 1, "password": "12345678"}):
        status, resp, _ = anon.call("POST", "/api/auth/login", body)
        assert 400 <= status < 500 and status != 429, (body, status, resp)
        assert isinstance(resp.get("detail"), str), resp
    status, resp, _ = anon.call("POST", "/api/auth/login", raw=b"{nope")
    assert status == 400, (status, resp)


# --------------------------------------------------------------------------
# tokens, me, logout
# --------------------------------------------------------------------------

def test_me(new_account):
    a = new_account()
    status, body, _ = a.client.call("GET", "/api/auth/me")
    assert status == 200, body
    assert body == {"user_id": a.user_id, "username": a.username}


def test_logout_revokes_only_that_token(auth_server, new_account):
    a = new_account()
    c = auth_server.client()
    second = login(c, a.username, a.password)["access_token"]
    status, body, _ = a.client.call("POST", "/api/auth/logout")
    assert status == 204, (status, body)
    assert a.client.last_raw == b"", a.client.last_raw
    for method, path in (("GET", "/api/auth/me"), ("GET", f"/api/users/{a.user_id}"),
                         ("GET", f"/api/conversations/user/{a.user_id}"), ("POST", "/api/auth/logout")):
        status, body, headers = a.client.call(method, path)
        assert_401(status, body, headers, INVALID_TOKEN, f"{method} {path} with a revoked token")
    other = auth_server.client(token=second)
    status, body, _ = other.call("GET", "/api/auth/me")
    assert status == 200 and body["user_id"] == a.user_id, "logout revoked another token of the same user"
    other.close()
    c.close()


def test_logout_without_a_token(anon):
    status, body, headers = anon.call("POST", "/api/auth/logout")
    assert_401(status, body, headers, NOT_AUTHENTICATED, "logout without a token")


def protected_routes(uid, other_uid, cid, mid):
    msg = {"receiver_id": other_uid, "content": "hi"}
    return [
        ("GET", "/api/auth/me", None),
        ("POST", "/api/auth/logout", None),
        ("GET", f"/api/users/{uid}", None),
        ("GET", f"/api/users?username=someone", None),
        ("GET", f"/api/users/not-a-uuid", None),
        ("POST", "/api/messages/", dict(msg, sender_id=uid)),
        ("POST", "/api/messages", dict(msg, sender_id=uid)),
        ("POST", "/api/messages/send", dict(msg, sender_id=uid)),
        ("POST", "/api/messages/", msg),
        ("POST", "/api/messages/", {"garbage": True}),
        ("GET", f"/api/messages/conversation/{cid}", None),
        ("GET", f"/api/messages/conversation/{cid}?limit=5&before_message_id={mid}", None),
        ("GET", f"/api/messages/conversation/{cid}/before", None),
        ("GET", f"/api/conversations/user/{uid}", None),
        ("GET", f"/api/conversations/{cid}", None),
        ("GET", "/api/events", None),
    ]


def _with_bad_token(auth_server, token, routes, detail, what):
    c = auth_server.client(token=token) if token is not None else auth_server.client()
    try:
        for method, path, body in routes:
            status, resp, headers = c.call(method, path, body)
            assert_401(status, resp, headers, detail, f"{what}: {method} {path}")
    finally:
        c.close()


@pytest.fixture(scope="module")
def pair(auth_server):
    a = make_account(auth_server)
    b = make_account(auth_server)
    m = a.client.send(a.user_id, b.user_id, "setup")
    yield a, b, m
    a.close()
    b.close()


def test_every_protected_route_needs_a_token(auth_server, pair):
    a, b, m = pair
    routes = protected_routes(a.user_id, b.user_id, m["conversation_id"], m["message_id"])
    _with_bad_token(auth_server, None, routes, NOT_AUTHENTICATED, "no token")
    # an Authorization header that is not a bearer token is no token either
    c = auth_server.client()
    for h in ("", "Basic dXNlcjpwYXNz", "Token " + a.token):
        status, resp, headers = c.call("GET", "/api/auth/me", headers={"Authorization": h})
        assert status == 401 and headers.get("www-authenticate"), (h, status, resp)
    c.close()
    # nothing was written by any of those
    page = a.client.messages_page(m["conversation_id"])
    assert [x["message_id"] for x in page["data"]] == [m["message_id"]]


@pytest.mark.parametrize("token", [
    "garbage",
    "x" * 43,
    base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("="),  # well-formed, unknown
    "a" * 2000,
])
def test_unknown_tokens_are_401_invalid(auth_server, pair, token):
    a, b, m = pair
    routes = protected_routes(a.user_id, b.user_id, m["conversation_id"], m["message_id"])
    _with_bad_token(auth_server, token, routes, INVALID_TOKEN, f"token {token[:10]!r}")


def test_a_token_with_one_character_changed_is_invalid(auth_server, pair):
    a, _, _ = pair
    t = a.token
    flipped = t[:-1] + ("A" if t[-1] != "A" else "B")
    c = auth_server.client(token=flipped)
    status, body, headers = c.call("GET", "/api/auth/me")
    assert_401(status, body, headers, INVALID_TOKEN, "altered token")
    c.close()


def test_open_routes_need_no_token(anon):
    for path in ("/health", "/openapi.json", "/"):
        status, body, _ = anon.call("GET", path)
        assert status == 200, (path, status, body)
        assert isinstance(body, dict), path
    # register and login: covered above without any token; once more here
    user, pw = register(anon)
    login(anon, user["username"], pw)


def test_openapi_documents_the_new_routes(anon):
    status, doc, _ = anon.call("GET", "/openapi.json")
    assert status == 200
    paths = doc.get("paths", {})
    for p in ("/api/auth/login", "/api/auth/logout", "/api/auth/me", "/api/events"):
        assert p in paths, f"{p} missing from /openapi.json"


# --------------------------------------------------------------------------
# access control
# --------------------------------------------------------------------------

def test_the_sender_is_the_caller(new_account):
    a, b = new_account(), new_account()
    status, m, _ = a.client.call("POST", "/api/messages/", {"receiver_id": b.user_id, "content": "no sender"})
    assert status == 201, m
    assert m["sender_id"] == a.user_id and m["receiver_id"] == b.user_id
    assert m["conversation_id"] == derive_conversation_id(a.user_id, b.user_id)
    m2 = a.client.send(a.user_id, b.user_id, "explicit sender")
    m3 = a.client.send(a.user_id.upper(), b.user_id, "upper-case sender id", path="/api/messages/send")
    assert m3["sender_id"] == a.user_id
    status, body, _ = a.client.call("POST", "/api/messages/",
                                    {"sender_id": b.user_id, "receiver_id": a.user_id, "content": "forged"})
    assert status == 403, (status, body)
    assert body == {"detail": SENDER_MISMATCH}, body
    status, body, _ = a.client.call("POST", "/api/messages",
                                    {"sender_id": str(uuid.uuid4()), "receiver_id": b.user_id, "content": "forged"})
    assert status == 403 and body == {"detail": SENDER_MISMATCH}, (status, body)
    page = b.client.messages_page(m["conversation_id"])
    assert [x["content"] for x in page["data"]] == ["upper-case sender id", "explicit sender", "no sender"], \
        "a forged send was written"
    assert m2["message_id"] in [x["message_id"] for x in page["data"]]


def test_idempotent_retry_with_auth(new_account):
    a, b = new_account(), new_account()
    body = {"receiver_id": b.user_id, "content": "once", "client_message_id": "k-1"}
    status, m1, _ = a.client.call("POST", "/api/messages/", body)
    assert status == 201, m1
    status, m2, _ = a.client.call("POST", "/api/messages/", body)
    assert status == 200 and m2 == m1, (status, m2)


def test_conversation_list_only_for_yourself(new_account):
    a, b = new_account(), new_account()
    a.client.send(a.user_id, b.user_id, "hello")
    page = a.client.conversations_page(a.user_id)
    assert [c["user2_id"] for c in page["data"]] == [b.user_id]
    for uid in (b.user_id, str(uuid.uuid4())):
        status, body, _ = a.client.call("GET", f"/api/conversations/user/{uid}")
        assert status == 404, (uid, status, body)
        assert body == {"detail": USER_NOT_FOUND}, body
    status, body, _ = a.client.call("GET", f"/api/conversations/user/{a.user_id.upper()}")
    assert status == 200, "one's own id in upper case is still one's own id"


def test_only_participants_read_a_conversation(new_account):
    a, b, c = new_account(), new_account(), new_account()
    m = a.client.send(a.user_id, b.user_id, "private")
    cid = m["conversation_id"]
    for who in (a, b):
        status, body, _ = who.client.call("GET", f"/api/conversations/{cid}")
        assert status == 200 and body["last_message_id"] == m["message_id"], body
        page = who.client.messages_page(cid)
        assert [x["message_id"] for x in page["data"]] == [m["message_id"]]
        status, body, _ = who.client.call("GET", f"/api/messages/conversation/{cid}/before?limit=5")
        assert status == 200 and body["data"][0]["message_id"] == m["message_id"], body
    nowhere = str(uuid.uuid4())
    for path in (f"/api/conversations/{{}}", f"/api/messages/conversation/{{}}",
                 f"/api/messages/conversation/{{}}/before",
                 f"/api/messages/conversation/{{}}?limit=5&after_message_id={m['message_id']}",
                 f"/api/messages/conversation/{{}}?before_message_id={m['message_id']}"):
        answers = []
        for target in (cid, nowhere):
            status, body, _ = c.client.call("GET", path.format(target))
            assert status == 404, (path.format(target), status, body)
            assert body == {"detail": CONV_NOT_FOUND}, (path, body)
            answers.append(c.client.last_raw)
        assert answers[0] == answers[1], \
            "someone else's conversation must look exactly like a nonexistent one"
    assert b"private" not in c.client.last_raw


def test_any_user_can_look_up_people(new_account):
    a, b = new_account(), new_account()
    status, body, _ = a.client.call("GET", f"/api/users/{b.user_id}")
    assert status == 200 and body == {"user_id": b.user_id, "username": b.username}
    status, body, _ = a.client.call("GET", f"/api/users?username={b.username.upper()}")
    assert status == 200 and body == {"user_id": b.user_id, "username": b.username}
    status, body, _ = a.client.call("GET", f"/api/users/{uuid.uuid4()}")
    assert status == 404, body


def test_token_of_a_user_sends_as_that_user_only(new_account):
    a, b = new_account(), new_account()
    m = b.client.send(b.user_id, a.user_id, "from b")
    assert m["sender_id"] == b.user_id
    status, body, _ = b.client.call("POST", "/api/messages/",
                                    {"sender_id": a.user_id, "receiver_id": b.user_id, "content": "as a"})
    assert status == 403, body


# --------------------------------------------------------------------------
# servers of their own: token expiry and the default mode
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_ttl_server(_module_tmp):
    """Token TTL 2 s, and MESSENGER_AUTH unset: auth must be on by default."""
    d = _module_tmp / "ttl"
    d.mkdir()
    srv = ServerProcess(d, log_dir=_module_tmp, args=FAST_ARGON2 + ("--token-ttl", "2"), auth=None).start()
    yield srv
    srv.stop_and_check()


def test_auth_is_on_by_default(short_ttl_server):
    c = short_ttl_server.client()
    status, body, _ = c.call("POST", "/api/users", {"username": new_username()})
    assert status == 422 and body["detail"].startswith("password"), (status, body)
    status, body, headers = c.call("GET", f"/api/users/{uuid.uuid4()}")
    assert_401(status, body, headers, NOT_AUTHENTICATED, "default mode")
    c.close()


def test_tokens_expire(short_ttl_server):
    c = short_ttl_server.client()
    user, pw = register(c)
    t0 = now_ms()
    body = login(c, user["username"], pw)
    exp = parse_time(body["expires_at"])
    assert t0 + 2000 - 1500 <= exp <= now_ms() + 2000 + 1500, ("expires_at is not ~ now + 2 s", body)
    a = short_ttl_server.client(token=body["access_token"])
    status, me, _ = a.call("GET", "/api/auth/me")
    assert status == 200, ("a fresh token was refused", status, me)
    deadline = time.monotonic() + 8
    while True:
        status, resp, headers = a.call("GET", "/api/auth/me")
        if status != 200:
            break
        assert time.monotonic() < deadline, "a token with a 2 s TTL still works after 8 s"
        time.sleep(0.2)
    assert now_ms() >= exp - 1000, "the token stopped working well before its expires_at"
    assert_401(status, resp, headers, INVALID_TOKEN, "expired token")
    # a new login works again
    body2 = login(c, user["username"], pw)
    a.token = body2["access_token"]
    status, _, _ = a.call("GET", "/api/auth/me")
    assert status == 200
    a.close()
    c.close()


# --------------------------------------------------------------------------
# login rate limit
# --------------------------------------------------------------------------

ATTEMPTS = 3
WINDOW = 4


@pytest.fixture(scope="module")
def limited_server(_module_tmp):
    d = _module_tmp / "limited"
    d.mkdir()
    srv = ServerProcess(d, log_dir=_module_tmp, auth=True,
                        args=FAST_ARGON2 + ("--login-attempts", ATTEMPTS, "--login-window", WINDOW)).start()
    yield srv
    srv.stop_and_check()


def client_from(server, source_ip):
    """A client whose connections come from another loopback address."""
    c = Client(server.host, server.port)
    c.conn = http.client.HTTPConnection(server.host, server.port, timeout=30, source_address=(source_ip, 0))
    return c


def assert_429(status, body, headers, what):
    assert status == 429, (what, status, body)
    assert body == {"detail": TOO_MANY}, (what, body)
    ra = headers.get("retry-after")
    assert ra is not None and ra.isdigit(), (what, "Retry-After must be a number of seconds", ra)
    assert 1 <= int(ra) <= WINDOW, (what, ra)
    return int(ra)


def test_login_limit_per_username(limited_server):
    c = limited_server.client()
    x, xpw = register(c)
    y, ypw = register(c)
    for i in range(ATTEMPTS):
        status, body, headers = try_login(c, x["username"], f"wrong-{i}-password")
        assert_401(status, body, headers, BAD_LOGIN, f"failure {i + 1}")
    status, body, headers = try_login(c, x["username"], xpw)
    retry_after = assert_429(status, body, headers, f"attempt {ATTEMPTS + 1} with the right password")
    # the case of the name does not matter
    status, body, headers = try_login(c, x["username"].upper(), xpw)
    assert_429(status, body, headers, "same name, other case")
    # nor the address: the limit is per username
    other = client_from(limited_server, "127.0.0.2")
    status, body, headers = try_login(other, x["username"], xpw)
    assert_429(status, body, headers, "same name from another address")
    # another name from the same address is not limited
    login(c, y["username"], ypw)
    # after Retry-After seconds the right password works again
    time.sleep(retry_after + 0.3)
    body = login(c, x["username"], xpw)
    assert body["user"]["user_id"] == x["user_id"]
    other.close()
    c.close()


def test_login_limit_per_address(limited_server):
    # from an address of its own, so the other test's failures do not count
    c = client_from(limited_server, "127.0.0.4")
    users = [register(c) for _ in range(9)]
    fresh, fresh_pw = register(c)
    fails = 0
    for u, _ in users:
        for j in range(ATTEMPTS - 1):  # never reach the per-username limit
            if fails == 5 * ATTEMPTS:
                break
            status, body, headers = try_login(c, u["username"], f"wrong-{j}-password")
            fails += 1
            assert_401(status, body, headers, BAD_LOGIN, f"address failure {fails} (limit {5 * ATTEMPTS})")
    assert fails == 5 * ATTEMPTS
    status, body, headers = try_login(c, fresh["username"], fresh_pw)
    assert_429(status, body, headers, f"attempt after {fails} failures from one address")
    # another address is not limited, for the same user
    other = client_from(limited_server, "127.0.0.3")
    body = login(other, fresh["username"], fresh_pw)
    assert body["user"]["user_id"] == fresh["user_id"]
    other.close()
    c.close()


# --------------------------------------------------------------------------
# auth off, then on, over the same data
# --------------------------------------------------------------------------

def test_auth_off_is_the_open_api_and_passwords_carry_over(server_factory):
    d = server_factory.new_dir("auth-switch")
    srv = server_factory.start(d, args=FAST_ARGON2)  # MESSENGER_AUTH=off
    c = srv.client()
    plain = c.create_user()                            # no password: as before
    status, status_body, _ = c.call("GET", f"/api/users/{plain['user_id']}")
    assert status == 200, status_body
    name, pw = new_username("Later"), new_password()
    status, withpw, _ = c.call("POST", "/api/users", {"username": name, "password": pw})
    assert status == 201 and set(withpw) == {"user_id", "username"}, withpw
    third = c.create_user()
    m1 = c.send(plain["user_id"], withpw["user_id"], "open api 1")
    m2 = c.send(withpw["user_id"], third["user_id"], "open api 2")
    # the open API: anyone reads anything, sender_id is required and trusted
    page = c.conversations_page(plain["user_id"])
    assert page["data"][0]["conversation_id"] == m1["conversation_id"]
    status, body, _ = c.call("POST", "/api/messages/", {"receiver_id": third["user_id"], "content": "x"})
    assert status == 422, ("without auth, sender_id is required", status, body)
    c.close()
    srv.stop_and_check()

    srv = server_factory.start(d, args=FAST_ARGON2, auth=True)
    c = srv.client()
    body = login(c, name.upper(), pw)
    assert body["user"] == withpw
    status, resp, headers = try_login(c, plain["username"], "whatever-password")
    assert_401(status, resp, headers, BAD_LOGIN, "user registered without a password")
    a = srv.client(token=body["access_token"])
    page = a.conversations_page(withpw["user_id"])
    assert {x["conversation_id"] for x in page["data"]} == {m1["conversation_id"], m2["conversation_id"]}
    page = a.messages_page(m1["conversation_id"])
    assert [x["message_id"] for x in page["data"]] == [m1["message_id"]]
    status, resp, _ = c.call("GET", f"/api/messages/conversation/{m1['conversation_id']}")
    assert status == 401, resp
    a.close()
    c.close()
    srv.stop_and_check()
