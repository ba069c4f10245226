"""POST /api/users, GET /api/users/{user_id}, GET /api/users?username=."""

import json
import uuid
from urllib.parse import quote

import pytest


def uname(prefix="u"):
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def test_create_user(client, lib):
    name = uname("Create-")
    status, body, headers = client.call("POST", "/api/users", {"username": name})
    assert status == 201, body
    assert set(body) == {"user_id", "username"}, body
    lib.check_uuid(body["user_id"])
    assert body["username"] == name  # case preserved


def test_get_user_by_id(client, lib):
    u = client.create_user()
    status, body, _ = client.call("GET", f"/api/users/{u['user_id']}")
    assert status == 200, body
    assert body == u


def test_get_user_by_uppercase_id_is_normalised(client):
    u = client.create_user()
    status, body, _ = client.call("GET", f"/api/users/{u['user_id'].upper()}")
    assert status == 200, body
    assert body == u  # user_id in lowercase in the response


def test_get_unknown_user_404(client, lib):
    status, body, _ = client.call("GET", f"/api/users/{uuid.uuid4()}")
    assert status == 404, body
    lib.check_error(body)


@pytest.mark.parametrize("bad", [
    "not-a-uuid",
    "12345",
    "00000000-0000-0000-0000-00000000000",    # one digit short
    "00000000-0000-0000-0000-0000000000000",  # one digit long
    "g0000000-0000-0000-0000-000000000000",   # non-hex
    "00000000_0000_0000_0000_000000000000",
])
def test_get_user_malformed_id_422(client, lib, bad):
    status, body, _ = client.call("GET", f"/api/users/{bad}")
    assert status == 422, (bad, status, body)
    lib.check_error(body)


def test_find_user_by_name_case_insensitive(client):
    name = uname("Finder")
    u = client.create_user(name)
    for q in (name, name.lower(), name.upper(), name.swapcase()):
        status, body, _ = client.call("GET", f"/api/users?username={quote(q)}")
        assert status == 200, (q, status, body)
        assert body == u, (q, body)


@pytest.mark.parametrize("raw", ["%FF", "a%C3%28b", "%ED%A0%80", "%F4%90%80%80"])
def test_find_invalid_utf8_username_422(client, lib, raw):
    # Cassandra rejects invalid UTF-8 text itself: it must never get there.
    status, body, _ = client.call("GET", "/api/users?username=" + raw)
    assert status == 422, body
    lib.check_error(body)


def test_find_unknown_username_404(client, lib):
    status, body, _ = client.call("GET", f"/api/users?username={uname('nobody')}")
    assert status == 404, body
    lib.check_error(body)


def test_find_user_missing_parameter_422(client, lib):
    status, body, _ = client.call("GET", "/api/users")
    assert status == 422, body
    lib.check_error(body)
    status, body, _ = client.call("GET", "/api/users?other=1")
    assert status == 422, body
    lib.check_error(body)


def test_find_user_percent_encoded(client):
    specials = [uname("sp ace "), uname("plus+"), uname("amp&eq=") + "?#/", uname("émoji😀"),
                uname("pct%")]
    for name in specials:
        u = client.create_user(name)
        assert u["username"] == name
        status, body, _ = client.call("GET", "/api/users?username=" + quote(name, safe=""))
        assert status == 200, (name, status, body)
        assert body == u
    # percent-encoding of ordinary characters is decoded too
    name = uname("plain")
    u = client.create_user(name)
    encoded = "".join(f"%{b:02X}" for b in name.encode())
    status, body, _ = client.call("GET", f"/api/users?username={encoded}")
    assert status == 200, body
    assert body == u
    status, body, _ = client.call("GET", f"/api/users?username={encoded.lower()}")
    assert status == 200, body
    assert body == u


def test_duplicate_username_409(client, lib):
    name = uname("dup")
    client.create_user(name)
    status, body, _ = client.call("POST", "/api/users", {"username": name})
    assert status == 409, body
    lib.check_error(body)


def test_duplicate_username_case_insensitive_409(client, lib):
    base = uname("alice")
    client.create_user(base.capitalize())
    for variant in (base, base.upper(), base.capitalize()):
        status, body, _ = client.call("POST", "/api/users", {"username": variant})
        assert status == 409, (variant, status, body)
        lib.check_error(body)


def test_username_length_limits(client, lib):
    ok_ascii = ("x" + uuid.uuid4().hex)[:32] * 2  # 64 chars
    assert len(ok_ascii) == 64
    status, body, _ = client.call("POST", "/api/users", {"username": ok_ascii})
    assert status == 201, body
    status, body, _ = client.call("POST", "/api/users", {"username": ok_ascii + "y"})
    assert status == 422, body
    lib.check_error(body)


def test_username_64_emoji_ok_65_rejected(client, lib):
    # 64 code points (256 UTF-8 bytes) is fine; distinct per run via a hex prefix
    tag = uuid.uuid4().hex[:8]
    emoji64 = tag + "😀" * (64 - len(tag))
    assert len(emoji64) == 64
    status, body, _ = client.call("POST", "/api/users", {"username": emoji64})
    assert status == 201, body
    assert body["username"] == emoji64
    status, body, _ = client.call("GET", f"/api/users/{body['user_id']}")
    assert body["username"] == emoji64
    status, body, _ = client.call("POST", "/api/users", {"username": emoji64 + "😀"})
    assert status == 422, body
    lib.check_error(body)
    # also when sent as \u escapes (surrogate pairs)
    raw = json.dumps({"username": tag[:7] + "😁" * 57}).encode()
    status, body, _ = client.call("POST", "/api/users", raw=raw)
    assert status == 201, body
    assert body["username"] == tag[:7] + "😁" * 57
    raw = json.dumps({"username": tag[:7] + "😁" * 58}).encode()
    status, body, _ = client.call("POST", "/api/users", raw=raw)
    assert status == 422, body


def test_empty_username_422(client, lib):
    status, body, _ = client.call("POST", "/api/users", {"username": ""})
    assert status == 422, body
    lib.check_error(body)


@pytest.mark.parametrize("ctrl", ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"])
def test_username_control_characters_422(client, lib, ctrl):
    name = uname("ctl") + ctrl + "x"
    status, body, _ = client.call("POST", "/api/users", {"username": name})
    assert status == 422, (repr(ctrl), status, body)
    lib.check_error(body)
    # nothing was created under the name without the control character either
    status, body, _ = client.call("GET", "/api/users?username=" + quote(name, safe=""))
    assert status in (404, 422), (repr(ctrl), status, body)


@pytest.mark.parametrize("payload", [
    {},
    {"username": None},
    {"username": 5},
    {"username": True},
    {"username": ["a"]},
    {"username": {"a": 1}},
    {"name": "someone"},
])
def test_username_missing_or_wrong_type_422(client, lib, payload):
    status, body, _ = client.call("POST", "/api/users", payload)
    assert status == 422, (payload, status, body)
    lib.check_error(body)


def test_create_user_extra_fields_ignored(client, lib):
    name = uname("extra")
    status, body, _ = client.call("POST", "/api/users", {"username": name, "age": 3, "x": [1, {}]})
    assert status == 201, body
    assert set(body) == {"user_id", "username"} and body["username"] == name


@pytest.mark.parametrize("raw", [
    b"",
    b"{",
    b'{"username": "abc"',
    b'{"username": }',
    b"username=abc",
    b'["username", "abc"]',
    b'"abc"',
    b"42",
    b"null",
    b"true",
    b'{"username": "abc"} trailing',
    b"{'username': 'abc'}",
])
def test_create_user_body_not_json_object_400(client, lib, raw):
    status, body, _ = client.call("POST", "/api/users", raw=raw)
    assert status == 400, (raw, status, body)
    lib.check_error(body)


def test_username_escaped_json_roundtrip(client):
    name = uname('q"uo\\te/ü')
    raw = json.dumps({"username": name}, ensure_ascii=True).encode()
    status, body, _ = client.call("POST", "/api/users", raw=raw)
    assert status == 201, body
    assert body["username"] == name
    status, body2, _ = client.call("GET", "/api/users?username=" + quote(name, safe=""))
    assert status == 200 and body2 == body
