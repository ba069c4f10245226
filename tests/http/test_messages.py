"""Sending messages (POST /api/messages/ and aliases), GET /api/conversations/{id},
content rules, id formats, JSON round trips and idempotent retries."""

import json
import time
import uuid

import pytest


@pytest.fixture(scope="module")
def pair(client):
    a = client.create_user()
    b = client.create_user()
    return a["user_id"], b["user_id"]


def fresh_pair(client):
    return client.create_user()["user_id"], client.create_user()["user_id"]


def msg_body(s, r, content="hello", **extra):
    d = {"sender_id": s, "receiver_id": r, "content": content}
    d.update(extra)
    return d


# ---------------------------------------------------------------- sending

def test_send_message_shape(client, lib):
    a, b = fresh_pair(client)
    before_ms = time.time() * 1000
    status, m, headers = client.call("POST", "/api/messages/", msg_body(a, b, "Hello, Bob"))
    after_ms = time.time() * 1000
    assert status == 201, m
    assert set(m) == {"message_id", "conversation_id", "sender_id", "receiver_id", "content", "created_at"}, m
    lib.check_message(m)
    lib.check_uuid(m["message_id"], version=1)
    assert m["sender_id"] == a and m["receiver_id"] == b
    assert m["content"] == "Hello, Bob"
    assert m["conversation_id"] == lib.derive_conversation_id(a, b)
    t = lib.parse_time(m["created_at"])
    assert before_ms - 60_000 <= t <= after_ms + 60_000, (m["created_at"], before_ms, after_ms)


def test_conversation_id_is_symmetric(client, lib):
    a, b = fresh_pair(client)
    m1 = client.send(a, b, "a->b")
    m2 = client.send(b, a, "b->a")
    assert m1["conversation_id"] == m2["conversation_id"] == lib.derive_conversation_id(a, b)
    data = client.messages_page(m1["conversation_id"])["data"]
    assert [m["content"] for m in data] == ["b->a", "a->b"]


@pytest.mark.parametrize("path", ["/api/messages/", "/api/messages", "/api/messages/send"])
def test_send_paths(client, lib, path):
    a, b = fresh_pair(client)
    status, m, _ = client.call("POST", path, msg_body(a, b, f"via {path}"))
    assert status == 201, (path, status, m)
    lib.check_message(m)
    page = client.messages_page(m["conversation_id"])
    assert page["data"] == [m]


def test_all_send_paths_share_one_conversation(client, lib):
    a, b = fresh_pair(client)
    sent = [client.send(a, b, f"m{i}", path=p)
            for i, p in enumerate(["/api/messages/", "/api/messages", "/api/messages/send"])]
    assert len({m["conversation_id"] for m in sent}) == 1
    data = client.messages_page(sent[0]["conversation_id"])["data"]
    assert data == list(reversed(sent))


def test_send_unknown_sender_or_receiver_404(client, lib, pair):
    a, b = pair
    ghost = str(uuid.uuid4())
    for body in (msg_body(ghost, b), msg_body(a, ghost), msg_body(ghost, str(uuid.uuid4()))):
        status, resp, _ = client.call("POST", "/api/messages/", body)
        assert status == 404, (body, status, resp)
        lib.check_error(resp)
    # the would-be conversation does not exist
    cid = lib.derive_conversation_id(a, ghost)
    status, resp, _ = client.call("GET", f"/api/conversations/{cid}")
    assert status == 404, resp


def test_send_to_self_422(client, lib, pair):
    a, _ = pair
    for s, r in ((a, a), (a.upper(), a), (a, a.upper())):
        status, resp, _ = client.call("POST", "/api/messages/", msg_body(s, r))
        assert status == 422, (s, r, status, resp)
        lib.check_error(resp)


@pytest.mark.parametrize("field,value", [
    ("sender_id", None), ("sender_id", 5), ("sender_id", ""), ("sender_id", "abc"),
    ("sender_id", ["x"]), ("sender_id", "00000000-0000-0000-0000-00000000000g"),
    ("receiver_id", None), ("receiver_id", 5), ("receiver_id", "nope"), ("receiver_id", {}),
    ("content", None), ("content", 5), ("content", True), ("content", []), ("content", {"a": 1}),
    ("client_message_id", 5), ("client_message_id", ["k"]), ("client_message_id", ""),
])
def test_send_wrong_types_422(client, lib, pair, field, value):
    a, b = pair
    body = msg_body(a, b, "typed")
    body[field] = value
    status, resp, _ = client.call("POST", "/api/messages/", body)
    assert status == 422, (field, value, status, resp)
    lib.check_error(resp)


@pytest.mark.parametrize("missing", ["sender_id", "receiver_id", "content"])
def test_send_missing_field_422(client, lib, pair, missing):
    a, b = pair
    body = msg_body(a, b, "partial")
    del body[missing]
    status, resp, _ = client.call("POST", "/api/messages/", body)
    assert status == 422, (missing, status, resp)
    lib.check_error(resp)


def test_malformed_id_wins_over_unknown_id(client, lib):
    status, resp, _ = client.call("POST", "/api/messages/", msg_body("bad-id", str(uuid.uuid4())))
    assert status == 422, resp


def test_send_extra_fields_ignored(client, lib):
    a, b = fresh_pair(client)
    body = msg_body(a, b, "extra", priority=5, nested={"x": [1, 2]}, message_id=str(uuid.uuid4()),
                    created_at="2000-01-01T00:00:00.000Z")
    status, m, _ = client.call("POST", "/api/messages/", body)
    assert status == 201, m
    assert m["content"] == "extra"
    assert m["message_id"] != body["message_id"]
    assert m["created_at"] != "2000-01-01T00:00:00.000Z"


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"[1,2]", b'"x"', b"null", b"1.5",
                                 b'{"sender_id": "', b"not json"])
def test_send_body_not_json_object_400(client, lib, raw):
    status, resp, _ = client.call("POST", "/api/messages/", raw=raw)
    assert status == 400, (raw, status, resp)
    lib.check_error(resp)


# ---------------------------------------------------------------- content rules

@pytest.mark.parametrize("content,ok", [
    ("", True),
    ("A" * 4096, True),
    ("A" * 4097, False),
    ("€" * 1365, True),           # 4095 bytes
    ("€" * 1365 + "A", True),     # 4096 bytes
    ("€" * 1366, False),          # 4098 bytes
    ("😀" * 1024, True),          # 4096 bytes
    ("😀" * 1024 + "A", False),   # 4097 bytes
    ("é" * 2048, True),           # 4096 bytes
    ("é" * 2048 + "e", False),    # 4097 bytes
], ids=["empty", "4096A", "4097A", "1365euro", "4096bytes-euro", "1366euro", "1024emoji",
        "4097bytes-emoji", "2048e-acute", "4097bytes-e-acute"])
def test_content_byte_limit(client, lib, content, ok):
    a, b = fresh_pair(client)
    status, m, _ = client.call("POST", "/api/messages/", msg_body(a, b, content))
    if ok:
        assert status == 201, (len(content.encode()), status, m)
        assert m["content"] == content
        page = client.messages_page(m["conversation_id"])
        assert page["data"][0]["content"] == content
    else:
        assert status == 422, (len(content.encode()), status, m)
        lib.check_error(m)
        cid = lib.derive_conversation_id(a, b)
        status, resp, _ = client.call("GET", f"/api/conversations/{cid}")
        assert status == 404, resp  # nothing was stored


@pytest.mark.parametrize("raw_content", [
    b"ab\xffcd",              # invalid byte
    b"\xc3\x28",              # bad continuation
    b"\xe2\x82",              # truncated sequence
    b"\xc0\xaf",              # overlong '/'
    b"\xed\xa0\x80",          # UTF-8 encoded surrogate
    b"\xf4\x90\x80\x80",      # above U+10FFFF
])
def test_content_invalid_utf8_bytes_rejected(client, lib, raw_content):
    a, b = fresh_pair(client)
    raw = b'{"sender_id": "%s", "receiver_id": "%s", "content": "' % (a.encode(), b.encode()) \
        + raw_content + b'"}'
    status, resp, _ = client.call("POST", "/api/messages/", raw=raw)
    # Invalid UTF-8 anywhere in input is 422, on every store.
    assert status == 422, (raw_content, status, resp)
    lib.check_error(resp)
    status, resp, _ = client.call("GET", f"/api/conversations/{lib.derive_conversation_id(a, b)}")
    assert status == 404, resp


@pytest.mark.parametrize("escape", [r"\ud800", r"\udfff", r"x\ud83dx", r"\ude00\ud83d"])
def test_content_lone_surrogate_escape_rejected(client, lib, escape):
    a, b = fresh_pair(client)
    raw = ('{"sender_id": "%s", "receiver_id": "%s", "content": "%s"}' % (a, b, escape)).encode()
    status, resp, _ = client.call("POST", "/api/messages/", raw=raw)
    assert status in (400, 422), (escape, status, resp)
    lib.check_error(resp)
    status, resp, _ = client.call("GET", f"/api/conversations/{lib.derive_conversation_id(a, b)}")
    assert status == 404, resp


def test_surrogate_pair_escape_decodes_to_astral_char(client, lib):
    a, b = fresh_pair(client)
    raw = ('{"sender_id": "%s", "receiver_id": "%s", "content": "\\ud83d\\ude00 \\u00e9\\u20ac"}'
           % (a, b)).encode()
    status, m, _ = client.call("POST", "/api/messages/", raw=raw)
    assert status == 201, m
    assert m["content"] == "😀 é€"
    assert client.messages_page(m["conversation_id"])["data"][0]["content"] == "😀 é€"


SPECIAL = ('quote " backslash \\ slash / tab \t newline \n cr \r bell \x07 esc \x1b '
           'unit-sep \x1f del \x7f c1 \x85 ls \u2028 ps \u2029 bom \ufeff emoji 😀👩‍💻🇩🇪 '
           'cjk 漢字 rtl \u202e </script> \\u0041 %s {} []')
ALL_CONTROLS = "".join(chr(c) for c in range(1, 32)) + "\x7f"


@pytest.mark.parametrize("content", [SPECIAL, ALL_CONTROLS, '"', "\\", "\\\"", "\u2028", "\U0010FFFF",
                                     "  leading and trailing  ", "a\u0000b", "\u0000"],
                         ids=["special", "all-controls", "quote", "backslash", "bs-quote", "U+2028",
                              "U+10FFFF", "spaces", "embedded-NUL", "only-NUL"])
@pytest.mark.parametrize("ascii_escaped", [False, True], ids=["utf8", "escaped"])
def test_content_roundtrips_exactly(client, lib, content, ascii_escaped):
    a, b = fresh_pair(client)
    raw = json.dumps(msg_body(a, b, content), ensure_ascii=ascii_escaped).encode("utf-8")
    status, m, headers = client.call("POST", "/api/messages/", raw=raw)
    assert status == 201, (status, m)
    assert m is not None, f"response is not strict JSON: {client.last_raw[:300]!r}"
    assert m["content"] == content
    page = client.messages_page(m["conversation_id"])
    assert page["data"][0]["content"] == content, client.last_raw[:300]
    assert page["data"][0] == m
    status, conv, _ = client.call("GET", f"/api/conversations/{m['conversation_id']}")
    assert status == 200 and conv["last_message_content"] == content, conv
    item = client.conversations_page(a)["data"][0]
    assert item["last_message_content"] == content, item


def test_uppercase_ids_in_body_normalised(client, lib):
    a, b = fresh_pair(client)
    status, m, _ = client.call("POST", "/api/messages/", msg_body(a.upper(), b.upper(), "UP"))
    assert status == 201, m
    assert m["sender_id"] == a and m["receiver_id"] == b
    assert m["conversation_id"] == lib.derive_conversation_id(a, b)
    lib.check_message(m)
    status, m2, _ = client.call("POST", "/api/messages/", msg_body(b.upper(), a, "mixed"))
    assert status == 201, m2
    assert m2["conversation_id"] == m["conversation_id"]


# ---------------------------------------------------------------- GET /api/conversations/{id}

def test_get_conversation(client, lib):
    a, b = fresh_pair(client)
    first = client.send(a, b, "first")
    last = client.send(b, a, "second")
    cid = first["conversation_id"]
    status, conv, _ = client.call("GET", f"/api/conversations/{cid}")
    assert status == 200, conv
    assert set(conv) >= {"conversation_id", "user1_id", "user2_id", "created_at",
                         "last_message_at", "last_message_content", "last_message_id"}, conv
    assert conv["conversation_id"] == cid
    assert {conv["user1_id"], conv["user2_id"]} == {a, b}
    created = lib.check_time(conv["created_at"])
    assert created <= lib.parse_time(first["created_at"])
    assert conv["last_message_at"] == last["created_at"]
    assert conv["last_message_content"] == "second"
    assert conv["last_message_id"] == last["message_id"]
    # uppercase id in the path
    status, conv2, _ = client.call("GET", f"/api/conversations/{cid.upper()}")
    assert status == 200 and conv2 == conv


def test_get_conversation_unknown_404(client, lib, pair):
    status, resp, _ = client.call("GET", f"/api/conversations/{uuid.uuid4()}")
    assert status == 404, resp
    lib.check_error(resp)
    a, _ = pair
    c = client.create_user()["user_id"]  # never messaged with a
    status, resp, _ = client.call("GET", f"/api/conversations/{lib.derive_conversation_id(a, c)}")
    assert status == 404, resp


@pytest.mark.parametrize("bad", ["xyz", "1234", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
                                 "00000000-0000-0000-0000-0000000000001"])
def test_get_conversation_malformed_422(client, lib, bad):
    status, resp, _ = client.call("GET", f"/api/conversations/{bad}")
    assert status == 422, (bad, status, resp)
    lib.check_error(resp)


# ---------------------------------------------------------------- idempotency

def test_idempotent_retry_returns_same_message(client, lib):
    a, b = fresh_pair(client)
    key = f"key-{uuid.uuid4()}"
    status, m1, _ = client.call("POST", "/api/messages/", msg_body(a, b, "once", client_message_id=key))
    assert status == 201, m1
    lib.check_message(m1)
    for path in ("/api/messages/", "/api/messages", "/api/messages/send"):
        status, m2, _ = client.call("POST", path, msg_body(a, b, "once", client_message_id=key))
        assert status == 200, (path, status, m2)
        assert m2 == m1, (path, m2, m1)
    # uppercase ids are the same sender/receiver
    status, m3, _ = client.call("POST", "/api/messages/",
                                msg_body(a.upper(), b.upper(), "once", client_message_id=key))
    assert status == 200, m3
    assert m3 == m1
    data = client.walk_messages(m1["conversation_id"])
    assert data == [m1]


def test_idempotency_key_reuse_with_different_content_or_receiver_409(client, lib):
    a, b = fresh_pair(client)
    c = client.create_user()["user_id"]
    key = "k-" + uuid.uuid4().hex
    m1 = client.send(a, b, "original", client_message_id=key)
    status, resp, _ = client.call("POST", "/api/messages/", msg_body(a, b, "changed", client_message_id=key))
    assert status == 409, resp
    lib.check_error(resp)
    status, resp, _ = client.call("POST", "/api/messages/", msg_body(a, c, "original", client_message_id=key))
    assert status == 409, resp
    lib.check_error(resp)
    assert client.walk_messages(m1["conversation_id"]) == [m1]
    status, resp, _ = client.call("GET", f"/api/conversations/{lib.derive_conversation_id(a, c)}")
    assert status == 404, resp
    # the original retry still works after the conflicts
    status, m2, _ = client.call("POST", "/api/messages/", msg_body(a, b, "original", client_message_id=key))
    assert status == 200 and m2 == m1, m2


def test_idempotency_key_is_per_sender(client, lib):
    a, b = fresh_pair(client)
    key = "shared-" + uuid.uuid4().hex
    m1 = client.send(a, b, "from a", client_message_id=key)
    status, m2, _ = client.call("POST", "/api/messages/", msg_body(b, a, "from b", client_message_id=key))
    assert status == 201, m2
    assert m2["message_id"] != m1["message_id"]
    assert m2["content"] == "from b"
    data = client.walk_messages(m1["conversation_id"])
    assert [m["message_id"] for m in data] == [m2["message_id"], m1["message_id"]]


def test_no_key_means_no_dedup(client):
    a, b = fresh_pair(client)
    m1 = client.send(a, b, "same")
    m2 = client.send(a, b, "same")
    assert m1["message_id"] != m2["message_id"]
    assert len(client.walk_messages(m1["conversation_id"])) == 2


@pytest.mark.parametrize("key,ok", [
    ("k", True),
    ("x" * 128, True),
    ("x" * 129, False),
    ("é" * 64, True),         # 128 bytes
    ("é" * 64 + "x", False),  # 129 bytes
    ("😀" * 32, True),        # 128 bytes
    ("😀" * 32 + "x", False),
    ("", False),
])
def test_client_message_id_length_in_bytes(client, lib, key, ok):
    a, b = fresh_pair(client)
    status, m, _ = client.call("POST", "/api/messages/", msg_body(a, b, "k", client_message_id=key))
    if ok:
        assert status == 201, (len(key.encode()), status, m)
        status, m2, _ = client.call("POST", "/api/messages/", msg_body(a, b, "k", client_message_id=key))
        assert status == 200 and m2 == m, (status, m2)
    else:
        assert status == 422, (len(key.encode()), status, m)
        lib.check_error(m)
