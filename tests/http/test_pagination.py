"""Message pages (before/after cursors, /before alias) and conversation lists
(order, opaque and bare-id cursors, walk guarantees under concurrent writes)."""

import random
import threading
import uuid
from urllib.parse import quote

import pytest


def msgs_url(cid, qs=""):
    return f"/api/messages/conversation/{cid}" + (("?" + qs) if qs else "")


def convs_url(uid, qs=""):
    return f"/api/conversations/user/{uid}" + (("?" + qs) if qs else "")


@pytest.fixture(scope="module")
def conv28(client):
    """A conversation with 28 messages: 3 greetings then Paginated message 1..25."""
    a = client.create_user()["user_id"]
    b = client.create_user()["user_id"]
    sent = [client.send(a, b, "Hi Bob!"), client.send(b, a, "Hi Alice!"), client.send(a, b, "How are you?")]
    for i in range(1, 26):
        s, r = (a, b) if i % 2 else (b, a)
        sent.append(client.send(s, r, f"Paginated message {i}"))
    return {"a": a, "b": b, "cid": sent[0]["conversation_id"], "sent": sent,
            "newest_first": list(reversed(sent))}


# ================================================================ messages

def test_message_ids_strictly_decreasing_newest_first(client, lib, conv28):
    data = client.walk_messages(conv28["cid"])
    assert data == conv28["newest_first"]
    keys = [lib.timeuuid_key(m["message_id"]) for m in data]
    assert all(x > y for x, y in zip(keys, keys[1:])), "message ids not strictly decreasing"
    times = [lib.parse_time(m["created_at"]) for m in data]
    assert all(x >= y for x, y in zip(times, times[1:])), "created_at not non-increasing"
    for m in data:
        lib.check_message(m)


def test_default_page_is_20_newest_first(client, lib, conv28):
    status, page, _ = client.call("GET", msgs_url(conv28["cid"]))
    assert status == 200, page
    lib.check_page_shape(page, 20)
    assert page["total"] == 20 and page["limit"] == 20
    assert page["data"] == conv28["newest_first"][:20]
    assert page["data"][0]["content"] == "Paginated message 25"
    assert page["next_cursor"] == page["data"][-1]["message_id"]


def test_walk_20_then_8_ends_with_null_cursor(client, lib, conv28):
    p1 = client.messages_page(conv28["cid"], limit=20)
    assert p1["total"] == 20 and p1["next_cursor"] == p1["data"][-1]["message_id"]
    p2 = client.messages_page(conv28["cid"], limit=20, before_message_id=p1["next_cursor"])
    lib.check_page_shape(p2, 20)
    assert p2["total"] == 8
    assert p2["next_cursor"] is None
    assert p1["data"] + p2["data"] == conv28["newest_first"]
    assert [m["content"] for m in p2["data"]][-3:] == ["How are you?", "Hi Alice!", "Hi Bob!"]


def test_exact_fit_page_has_null_cursor(client, lib, conv28):
    cid, nf = conv28["cid"], conv28["newest_first"]
    p = client.messages_page(cid, limit=28)
    assert p["total"] == 28 and p["next_cursor"] is None
    p = client.messages_page(cid, limit=27)
    assert p["total"] == 27 and p["next_cursor"] == nf[26]["message_id"]
    p = client.messages_page(cid, limit=1, before_message_id=nf[26]["message_id"])
    assert p["data"] == [nf[27]] and p["next_cursor"] is None
    p = client.messages_page(cid, limit=8, before_message_id=nf[19]["message_id"])
    assert p["data"] == nf[20:] and p["next_cursor"] is None
    p = client.messages_page(cid, limit=14, before_message_id=nf[13]["message_id"])
    assert p["data"] == nf[14:] and p["next_cursor"] is None
    # before the oldest message: empty page
    p = client.messages_page(cid, limit=5, before_message_id=nf[-1]["message_id"])
    assert p["data"] == [] and p["total"] == 0 and p["next_cursor"] is None


@pytest.mark.parametrize("limit", [1, 3, 7, 10, 27, 100])
def test_walk_with_various_limits(client, lib, conv28, limit):
    assert lib.walk_messages(client, conv28["cid"], limit=limit) == conv28["newest_first"]


def test_before_alias(client, lib, conv28):
    cid = conv28["cid"]
    status, p1, _ = client.call("GET", f"/api/messages/conversation/{cid}/before")
    assert status == 200, p1
    assert p1 == client.messages_page(cid)
    status, p2, _ = client.call(
        "GET", f"/api/messages/conversation/{cid}/before?limit=20&before_message_id={p1['next_cursor']}")
    assert status == 200, p2
    assert p2["total"] == 8 and p2["next_cursor"] is None
    assert p1["data"] + p2["data"] == conv28["newest_first"]
    # after works on the alias too, and errors are the same
    nf = conv28["newest_first"]
    status, p3, _ = client.call("GET", f"/api/messages/conversation/{cid}/before?after_message_id={nf[2]['message_id']}")
    assert status == 200 and [m["message_id"] for m in p3["data"]] == [nf[1]["message_id"], nf[0]["message_id"]], p3
    for qs in ("limit=0", "limit=101", "before_message_id=xyz"):
        status, resp, _ = client.call("GET", f"/api/messages/conversation/{cid}/before?{qs}")
        assert status == 422, (qs, status, resp)
    status, resp, _ = client.call("GET", f"/api/messages/conversation/{uuid.uuid4()}/before")
    assert status == 200 and resp["data"] == [], resp  # auth off: an empty history, as the main route
    status, resp, _ = client.call("GET", "/api/messages/conversation/nope/before")
    assert status == 422, resp


def test_after_message_id_catch_up(client, lib, conv28):
    cid, sent = conv28["cid"], conv28["sent"]  # sent is oldest first
    p = client.messages_page(cid, limit=10, after_message_id=sent[4]["message_id"])
    lib.check_page_shape(p, 10)
    assert p["data"] == sent[5:15]            # oldest first
    assert p["next_cursor"] == sent[14]["message_id"]
    p = client.messages_page(cid, limit=10, after_message_id=p["next_cursor"])
    assert p["data"] == sent[15:25] and p["next_cursor"] == sent[24]["message_id"]
    p = client.messages_page(cid, limit=10, after_message_id=p["next_cursor"])
    assert p["data"] == sent[25:28] and p["next_cursor"] is None
    # exact fit
    p = client.messages_page(cid, limit=3, after_message_id=sent[24]["message_id"])
    assert p["data"] == sent[25:28] and p["next_cursor"] is None
    # after the newest: nothing
    p = client.messages_page(cid, limit=10, after_message_id=sent[-1]["message_id"])
    assert p["data"] == [] and p["total"] == 0 and p["next_cursor"] is None
    # default limit
    p = client.messages_page(cid, after_message_id=sent[0]["message_id"])
    assert p["limit"] == 20 and p["data"] == sent[1:21] and p["next_cursor"] == sent[20]["message_id"]
    # full catch-up walk from the oldest
    out, cur = [sent[0]], sent[0]["message_id"]
    while cur is not None:
        p = client.messages_page(cid, limit=6, after_message_id=cur)
        out.extend(p["data"])
        cur = p["next_cursor"]
    assert out == sent


def test_unknown_conversation_is_an_empty_history_on_every_kind_of_page(client, lib, conv28):
    """With auth off, a conversation nobody has written to has an empty
    history, cursor or not, as in the FastAPI implementation (with auth on it
    is 404: test_auth.py); an empty page of a known one is a 200 too (the
    store looks the conversation up only when a page comes out empty)."""
    ghost = str(uuid.uuid4())
    some_id = conv28["sent"][0]["message_id"]
    for qs in ("", "limit=5", f"before_message_id={some_id}", f"after_message_id={some_id}"):
        status, resp, _ = client.call("GET", msgs_url(ghost, qs))
        assert status == 200, (qs, resp)
        assert resp["data"] == [] and resp["total"] == 0 and resp["next_cursor"] is None, (qs, resp)
        assert resp["limit"] == (5 if qs == "limit=5" else 20), (qs, resp)
    oldest = conv28["sent"][0]["message_id"]
    p = client.messages_page(conv28["cid"], before_message_id=oldest)
    assert p["data"] == [] and p["next_cursor"] is None


def test_after_sees_new_messages(client, lib):
    a = client.create_user()["user_id"]
    b = client.create_user()["user_id"]
    m1 = client.send(a, b, "one")
    p = client.messages_page(m1["conversation_id"], after_message_id=m1["message_id"])
    assert p["data"] == [] and p["next_cursor"] is None
    m2 = client.send(b, a, "two")
    m3 = client.send(a, b, "three")
    p = client.messages_page(m1["conversation_id"], after_message_id=m1["message_id"])
    assert p["data"] == [m2, m3] and p["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "", "1.5", "1e1", "20x", "99999999999999999999"])
def test_message_limit_out_of_range_422(client, lib, conv28, limit):
    status, resp, _ = client.call("GET", msgs_url(conv28["cid"], f"limit={limit}"))
    assert status == 422, (limit, status, resp)
    lib.check_error(resp)


@pytest.mark.parametrize("limit", [1, 100])
def test_message_limit_bounds_ok(client, lib, conv28, limit):
    status, p, _ = client.call("GET", msgs_url(conv28["cid"], f"limit={limit}"))
    assert status == 200, p
    assert p["limit"] == limit and p["total"] == min(limit, 28)


def test_before_and_after_together_422(client, lib, conv28):
    nf = conv28["newest_first"]
    qs = f"before_message_id={nf[0]['message_id']}&after_message_id={nf[5]['message_id']}"
    status, resp, _ = client.call("GET", msgs_url(conv28["cid"], qs))
    assert status == 422, resp
    lib.check_error(resp)


@pytest.mark.parametrize("param", ["before_message_id", "after_message_id"])
@pytest.mark.parametrize("bad", ["xyz", "123", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "%20"])
def test_malformed_message_cursor_422(client, lib, conv28, param, bad):
    status, resp, _ = client.call("GET", msgs_url(conv28["cid"], f"{param}={bad}"))
    assert status == 422, (param, bad, status, resp)
    lib.check_error(resp)


def test_messages_unknown_conversation_empty_with_auth_off(client, lib):
    """The FastAPI implementation's own API test (test_empty_conversation)
    asks for the all-zero id and expects 200 with an empty page; so does a
    pair that has not talked yet."""
    zero = "00000000-0000-0000-0000-000000000000"
    a = client.create_user()["user_id"]
    b = client.create_user()["user_id"]
    for cid in (zero, str(uuid.uuid4()), lib.derive_conversation_id(a, b)):
        status, resp, _ = client.call("GET", msgs_url(cid))
        assert status == 200, (cid, resp)
        assert resp["total"] == 0 and resp["data"] == [] and resp["next_cursor"] is None, resp
    # Reading it created nothing: the conversation still does not exist.
    status, resp, _ = client.call("GET", f"/api/conversations/{lib.derive_conversation_id(a, b)}")
    assert status == 404, resp


@pytest.mark.parametrize("bad", ["nope", "1234", "00000000-0000-0000-0000-00000000000"])
def test_messages_malformed_conversation_id_422(client, lib, bad):
    status, resp, _ = client.call("GET", msgs_url(bad))
    assert status == 422, (bad, status, resp)
    lib.check_error(resp)


def test_uppercase_ids_in_path_and_query(client, lib, conv28):
    cid, nf = conv28["cid"], conv28["newest_first"]
    status, p, _ = client.call("GET", msgs_url(cid.upper(), f"limit=5&before_message_id={nf[4]['message_id'].upper()}"))
    assert status == 200, p
    assert p["data"] == nf[5:10]
    assert p["next_cursor"] == nf[9]["message_id"]  # lowercase
    status, p, _ = client.call("GET", msgs_url(cid.upper(), f"limit=2&after_message_id={nf[2]['message_id'].upper()}"))
    assert status == 200 and p["data"] == [nf[1], nf[0]], p


def test_percent_encoded_query_values(client, lib, conv28):
    cid, nf = conv28["cid"], conv28["newest_first"]
    enc_cursor = "".join(f"%{b:02X}" for b in nf[4]["message_id"].encode())
    status, p, _ = client.call("GET", msgs_url(cid, f"limit=%35&before_message_id={enc_cursor}"))
    assert status == 200, p
    assert p["limit"] == 5 and p["data"] == nf[5:10]


def test_percent_encoded_query_parameter_name(client, lib, conv28):
    status, p, _ = client.call("GET", msgs_url(conv28["cid"], "li%6Dit=3"))
    assert status == 200 and p["limit"] == 3, p


def test_message_walk_during_concurrent_sends(server, lib):
    """Messages arriving during a before-walk do not duplicate or hide older ones."""
    c = server.client()
    a = c.create_user()["user_id"]
    b = c.create_user()["user_id"]
    original = [c.send(a, b, f"orig {i}") for i in range(60)]
    cid = original[0]["conversation_id"]
    stop = threading.Event()
    errors = []

    def writer():
        w = server.client()
        try:
            i = 0
            while not stop.is_set() and i < 500:
                w.send(b, a, f"new {i}")
                i += 1
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(3):
            walked = lib.walk_messages(c, cid, limit=7)
            ids = [m["message_id"] for m in walked]
            assert len(ids) == len(set(ids)), "a message appeared twice in one walk"
            keys = [lib.timeuuid_key(x) for x in ids]
            assert all(x > y for x, y in zip(keys, keys[1:])), "walk not strictly newest-first"
            assert walked[-60:] == list(reversed(original))
    finally:
        stop.set()
        t.join()
        c.close()
    assert not errors, errors


# ================================================================ conversations

@pytest.fixture(scope="module")
def hub(client):
    """User u with 7 conversations; activity order p[6] (newest) .. p[0]."""
    u = client.create_user()["user_id"]
    partners = [client.create_user()["user_id"] for _ in range(7)]
    last = []
    for i, p in enumerate(partners):
        client.send(u, p, f"old to {i}")
        last.append(client.send(p, u, f"hello from {i}"))
    return {"u": u, "p": partners, "last": last,
            "order": [lib_cid(u, p) for p in reversed(partners)]}


def lib_cid(a, b):
    import hashlib
    x, y = sorted([a.lower(), b.lower()])
    return str(uuid.UUID(bytes=hashlib.sha256((x + y).encode()).digest()[:16]))


def test_conversation_list_items(client, lib, hub):
    status, page, _ = client.call("GET", convs_url(hub["u"]))
    assert status == 200, page
    lib.check_page_shape(page, 20)
    assert page["total"] == 7 and page["next_cursor"] is None
    assert [c["conversation_id"] for c in page["data"]] == hub["order"]
    for item, p, last in zip(page["data"], reversed(hub["p"]), reversed(hub["last"])):
        assert set(item) >= {"conversation_id", "user1_id", "user2_id", "last_message_at",
                             "last_message_content"}, item
        assert item["user1_id"] == hub["u"] and item["user2_id"] == p, item
        assert item["conversation_id"] == lib.derive_conversation_id(hub["u"], p)
        assert item["last_message_at"] == last["created_at"]
        assert item["last_message_content"] == last["content"]
        lib.check_time(item["last_message_at"])


def test_conversation_list_from_the_other_side(client, lib, hub):
    p = hub["p"][3]
    page = client.conversations_page(p)
    assert page["total"] == 1
    item = page["data"][0]
    assert item["user1_id"] == p and item["user2_id"] == hub["u"], item
    assert item["last_message_content"] == "hello from 3"


def test_conversation_walk_limit_2(client, lib, hub):
    pages, cursor = [], None
    while True:
        p = client.conversations_page(hub["u"], limit=2, before_conversation_id=cursor)
        lib.check_page_shape(p, 2)
        pages.append(p)
        cursor = p["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
        assert len(pages) < 10
    assert [p["total"] for p in pages] == [2, 2, 2, 1]
    assert [c["conversation_id"] for p in pages for c in p["data"]] == hub["order"]


def test_conversation_exact_fit_null_cursor(client, lib, hub):
    p = client.conversations_page(hub["u"], limit=7)
    assert p["total"] == 7 and p["next_cursor"] is None
    p = client.conversations_page(hub["u"], limit=6)
    assert p["total"] == 6 and isinstance(p["next_cursor"], str)
    p2 = client.conversations_page(hub["u"], limit=1, before_conversation_id=p["next_cursor"])
    assert p2["total"] == 1 and p2["next_cursor"] is None
    assert p2["data"][0]["conversation_id"] == hub["order"][6]
    p = client.conversations_page(hub["u"], limit=4)
    p2 = client.conversations_page(hub["u"], limit=3, before_conversation_id=p["next_cursor"])
    assert [c["conversation_id"] for c in p2["data"]] == hub["order"][4:]
    assert p2["next_cursor"] is None


def test_conversation_cursor_percent_encoded(client, lib, hub):
    p = client.conversations_page(hub["u"], limit=3)
    enc = quote(p["next_cursor"], safe="")
    enc_all = "".join(f"%{b:02X}" for b in p["next_cursor"].encode())
    for e in (enc, enc_all):
        status, p2, _ = client.call("GET", convs_url(hub["u"], f"limit=%33&before_conversation_id={e}"))
        assert status == 200, p2
        assert [c["conversation_id"] for c in p2["data"]] == hub["order"][3:6]


def test_bare_conversation_id_cursor(client, lib, hub):
    """FastAPI clients pass the last item's conversation id as the cursor."""
    order = hub["order"]
    out, cursor = [], None
    for _ in range(10):
        p = client.conversations_page(hub["u"], limit=2, before_conversation_id=cursor)
        out.extend(c["conversation_id"] for c in p["data"])
        if p["next_cursor"] is None:
            break
        cursor = p["data"][-1]["conversation_id"]
    assert out == order
    p = client.conversations_page(hub["u"], limit=20, before_conversation_id=order[2].upper())
    assert [c["conversation_id"] for c in p["data"]] == order[3:]
    assert p["next_cursor"] is None


def test_conversation_list_uppercase_user_id(client, lib, hub):
    p = client.conversations_page(hub["u"].upper())
    assert [c["conversation_id"] for c in p["data"]] == hub["order"]
    assert all(c["user1_id"] == hub["u"] for c in p["data"])


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "0", "eyJ4IjoxfQ==", "a" * 300,
                                    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
def test_conversation_garbage_cursor_422(client, lib, hub, cursor):
    status, resp, _ = client.call("GET", convs_url(hub["u"], "before_conversation_id=" + quote(cursor, safe="")))
    assert status == 422, (cursor, status, resp)
    lib.check_error(resp)


def test_conversation_cursor_of_foreign_conversation_422(client, lib, hub):
    """A bare id that is not one of the user's conversations names no position (openapi: 422)."""
    other = lib.derive_conversation_id(hub["p"][0], hub["p"][1])  # does not exist
    status, resp, _ = client.call("GET", convs_url(hub["u"], f"before_conversation_id={other}"))
    assert status == 422, resp
    lib.check_error(resp)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "", "2.0"])
def test_conversation_limit_out_of_range_422(client, lib, hub, limit):
    status, resp, _ = client.call("GET", convs_url(hub["u"], f"limit={limit}"))
    assert status == 422, (limit, status, resp)
    lib.check_error(resp)


@pytest.mark.parametrize("limit", [1, 100])
def test_conversation_limit_bounds_ok(client, lib, hub, limit):
    p = client.conversations_page(hub["u"], limit=limit)
    assert p["limit"] == limit and p["total"] == min(limit, 7)


def test_conversations_unknown_user_404(client, lib):
    status, resp, _ = client.call("GET", convs_url(uuid.uuid4()))
    assert status == 404, resp
    lib.check_error(resp)


@pytest.mark.parametrize("bad", ["nope", "42", "11111111-1111-1111-1111-11111111111z"])
def test_conversations_malformed_user_422(client, lib, bad):
    status, resp, _ = client.call("GET", convs_url(bad))
    assert status == 422, (bad, status, resp)
    lib.check_error(resp)


def test_user_without_conversations_empty_list(client, lib):
    u = client.create_user()["user_id"]
    status, p, _ = client.call("GET", convs_url(u))
    assert status == 200, p
    assert p == {**p, "total": 0, "limit": 20, "data": [], "next_cursor": None}


def test_order_changes_when_older_conversation_gets_message(client, lib):
    u = client.create_user()["user_id"]
    p1, p2, p3 = (client.create_user()["user_id"] for _ in range(3))
    c1, c2, c3 = (lib.derive_conversation_id(u, p) for p in (p1, p2, p3))
    for p in (p1, p2, p3):
        client.send(u, p, "to " + p)
    ids = lambda: [c["conversation_id"] for c in client.conversations_page(u)["data"]]
    assert ids() == [c3, c2, c1]
    bump = client.send(p1, u, "bump")
    assert ids() == [c1, c3, c2]
    top = client.conversations_page(u)["data"][0]
    assert top["last_message_content"] == "bump" and top["last_message_at"] == bump["created_at"]
    assert top["user1_id"] == u and top["user2_id"] == p1
    client.send(u, p2, "again")
    assert ids() == [c2, c1, c3]
    status, conv, _ = client.call("GET", f"/api/conversations/{c2}")
    assert conv["last_message_content"] == "again"


def same_ms_pairs(sent):
    """How many of the sends share their millisecond with another one."""
    by_ms = {}
    for m in sent:
        by_ms.setdefault(m["created_at"], []).append(m)
    return sum(len(v) for v in by_ms.values() if len(v) > 1)


def test_back_to_back_sends_list_in_send_order(client, lib):
    """Activity has the timeuuid's 100 ns (on both stores), so sends that
    share a millisecond list in the order they were sent; no sleeps."""
    u = client.create_user()["user_id"]
    ps = [client.create_user()["user_id"] for _ in range(30)]
    sent = [client.send(u, p, f"to {i}") for i, p in enumerate(ps)]
    ids = [c["conversation_id"] for c in client.walk_conversations(u, limit=7)]
    assert ids == [m["conversation_id"] for m in reversed(sent)], f"{same_ms_pairs(sent)} sends shared a millisecond"
    # Moving them again, in another order, in one burst.
    again = [client.send(p, u, "again") for p in reversed(ps[::2])]
    top = [c["conversation_id"] for c in client.conversations_page(u, limit=15)["data"]]
    assert top == [m["conversation_id"] for m in reversed(again)]


def test_concurrent_sends_in_one_millisecond_list_in_id_order(server, lib):
    """Eight senders at once, each into its own conversation with u, until
    some of them share a millisecond: the list is in message-id order (the
    order the store took them), never in conversation-id order."""
    c = server.client()
    u = c.create_user()["user_id"]
    ps = [c.create_user()["user_id"] for _ in range(8)]
    clients = [server.client() for _ in ps]
    shared = 0
    try:
        for rnd in range(30):
            start = threading.Barrier(len(ps))
            out = [None] * len(ps)

            def one(i):
                start.wait()
                out[i] = clients[i].send(ps[i], u, f"r{rnd}")

            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(ps))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            expect = [m["conversation_id"] for m in sorted(out, key=lambda m: lib.timeuuid_key(m["message_id"]),
                                                            reverse=True)]
            got = [x["conversation_id"] for x in c.conversations_page(u, limit=8)["data"]]
            assert got == expect, (rnd, [m["created_at"] for m in out])
            shared += same_ms_pairs(out)
            if shared >= 4:
                break
    finally:
        for x in clients:
            x.close()
        c.close()
    assert shared >= 2, "no two concurrent sends shared a millisecond in 30 rounds"


def test_conversation_walk_with_interleaved_sends_deterministic(client, lib):
    """Between pages, messages move seen and unseen conversations to the top."""
    u = client.create_user()["user_id"]
    ps = [client.create_user()["user_id"] for _ in range(7)]
    cids = [lib.derive_conversation_id(u, p) for p in ps]
    for p in ps:
        client.send(u, p, "start")
    # activity order: P6 P5 P4 P3 P2 P1 P0
    walked = []
    p = client.conversations_page(u, limit=2)
    walked += [c["conversation_id"] for c in p["data"]]
    assert walked == [cids[6], cids[5]]
    client.send(ps[0], u, "move unseen P0")
    client.send(ps[5], u, "move seen P5")
    p = client.conversations_page(u, limit=2, before_conversation_id=p["next_cursor"])
    walked += [c["conversation_id"] for c in p["data"]]
    client.send(ps[2], u, "move unseen P2")
    p = client.conversations_page(u, limit=2, before_conversation_id=p["next_cursor"])
    walked += [c["conversation_id"] for c in p["data"]]
    assert p["next_cursor"] is None
    assert walked == [cids[6], cids[5], cids[4], cids[3], cids[1]]
    fresh = [c["conversation_id"] for c in client.conversations_page(u, limit=2)["data"]]
    assert fresh == [cids[2], cids[5]]
    full = [c["conversation_id"] for c in client.conversations_page(u)["data"]]
    assert full == [cids[2], cids[5], cids[0], cids[6], cids[4], cids[3], cids[1]]


def test_conversation_walk_during_concurrent_sends(server, lib):
    """limit=2 walks over 7 conversations while another thread keeps sending:
    nothing twice, nothing skipped unless it was moved to the top meanwhile."""
    c = server.client()
    u = c.create_user()["user_id"]
    ps = [c.create_user()["user_id"] for _ in range(7)]
    cids = [lib.derive_conversation_id(u, p) for p in ps]
    for p in ps:
        c.send(p, u, "start")
    touched = []  # conversation ids, appended before each send starts
    stop = threading.Event()
    errors = []

    def writer():
        w = server.client()
        rng = random.Random(20240501)
        try:
            n = 0
            while not stop.is_set() and n < 3000:
                i = rng.randrange(7)
                touched.append(cids[i])
                if rng.random() < 0.5:
                    w.send(u, ps[i], f"w{n}")
                else:
                    w.send(ps[i], u, f"w{n}")
                n += 1
        except Exception as e:
            errors.append(e)
        finally:
            w.close()

    t = threading.Thread(target=writer)
    t.start()
    skips = 0
    try:
        for _ in range(25):
            n0 = len(touched)
            items = lib.walk_conversations(c, u, limit=2)
            window = set(touched[max(0, n0 - 1):])  # sends that may have landed during the walk
            ids = [x["conversation_id"] for x in items]
            assert len(ids) == len(set(ids)), f"a conversation came twice in one walk: {ids}"
            assert set(ids) <= set(cids), ids
            skipped = set(cids) - set(ids)
            skips += bool(skipped)
            assert skipped <= window, (
                f"skipped conversations {skipped} received no message during the walk")
            times = [lib.parse_time(x["last_message_at"]) for x in items]
            assert all(a >= b for a, b in zip(times, times[1:])), f"walk not in activity order: {items}"
            for x in items:
                assert x["user1_id"] == u
            first = lib.walk_conversations(c, u, limit=100)
            assert sorted(x["conversation_id"] for x in first) == sorted(cids)
    finally:
        stop.set()
        t.join()
        c.close()
    assert not errors, errors
