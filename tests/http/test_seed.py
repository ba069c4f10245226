"""The data set written by `messenger seed`, and seeding idempotency."""

import unicodedata
from urllib.parse import quote

import pytest

SEED_USERS = ("alice", "bob", "carol", "dave")


def find_user(client, name):
    status, body, _ = client.call("GET", f"/api/users?username={quote(name)}")
    assert status == 200, (name, status, body)
    return body


def discover(client, lib):
    """Seeded users by name, and every conversation reachable from them."""
    users = {n: find_user(client, n) for n in SEED_USERS}
    convs = {}    # conversation_id -> list item (first perspective seen)
    lists = {}
    for n, u in users.items():
        lists[n] = lib.walk_conversations(client, u["user_id"], limit=100)
        for item in lists[n]:
            convs.setdefault(item["conversation_id"], item)
    return users, convs, lists


@pytest.fixture(scope="module")
def seed(seeded_client, lib):
    users, convs, lists = discover(seeded_client, lib)
    ids = {n: u["user_id"] for n, u in users.items()}
    return {"users": users, "ids": ids, "convs": convs, "lists": lists}


def test_seeded_users(seeded_client, lib, seed):
    for name in SEED_USERS:
        u = seed["users"][name]
        assert u["username"] == name, u
        lib.check_uuid(u["user_id"])
        status, body, _ = seeded_client.call("GET", f"/api/users/{u['user_id']}")
        assert status == 200 and body == u, body
        assert find_user(seeded_client, name.upper()) == u
    assert len(set(seed["ids"].values())) == 4


def test_dave_has_no_conversations(seeded_client, seed):
    p = seeded_client.conversations_page(seed["ids"]["dave"])
    assert p["data"] == [] and p["total"] == 0 and p["next_cursor"] is None, p


def test_alice_bob_pagination_20_then_8(seeded_client, lib, seed):
    cid = lib.derive_conversation_id(seed["ids"]["alice"], seed["ids"]["bob"])
    assert cid in seed["convs"], "no alice-bob conversation in alice's or bob's list"
    p1 = seeded_client.messages_page(cid, limit=20)
    assert p1["total"] == 20
    assert p1["data"][0]["content"] == "Paginated message 25"
    assert [m["content"] for m in p1["data"]] == [f"Paginated message {i}" for i in range(25, 5, -1)]
    assert p1["next_cursor"] == p1["data"][-1]["message_id"]
    p2 = seeded_client.messages_page(cid, limit=20, before_message_id=p1["next_cursor"])
    assert p2["total"] == 8, [m["content"] for m in p2["data"]]
    assert p2["next_cursor"] is None
    contents = [m["content"] for m in p2["data"]]
    assert contents[:5] == [f"Paginated message {i}" for i in range(5, 0, -1)]
    assert all(not c.startswith("Paginated message") for c in contents[5:]), contents
    data = p1["data"] + p2["data"]
    keys = [lib.timeuuid_key(m["message_id"]) for m in data]
    assert all(a > b for a, b in zip(keys, keys[1:]))
    for m in data:
        lib.check_message(m)
        assert {m["sender_id"], m["receiver_id"]} == {seed["ids"]["alice"], seed["ids"]["bob"]}
    # the same through the /before alias
    status, q, _ = seeded_client.call(
        "GET", f"/api/messages/conversation/{cid}/before?limit=20&before_message_id={p1['next_cursor']}")
    assert status == 200 and q == p2, q
    # and the conversation record agrees
    status, conv, _ = seeded_client.call("GET", f"/api/conversations/{cid}")
    assert status == 200, conv
    assert conv["last_message_id"] == p1["data"][0]["message_id"]
    assert conv["last_message_content"] == "Paginated message 25"
    assert conv["last_message_at"] == p1["data"][0]["created_at"]
    assert {conv["user1_id"], conv["user2_id"]} == {seed["ids"]["alice"], seed["ids"]["bob"]}


def test_bob_carol_has_exactly_one_message(seeded_client, lib, seed):
    cid = lib.derive_conversation_id(seed["ids"]["bob"], seed["ids"]["carol"])
    assert cid in seed["convs"]
    p = seeded_client.messages_page(cid)
    assert p["total"] == 1 and p["next_cursor"] is None, p
    m = p["data"][0]
    lib.check_message(m)
    status, conv, _ = seeded_client.call("GET", f"/api/conversations/{cid}")
    assert conv["last_message_id"] == m["message_id"]
    assert conv["last_message_content"] == m["content"]


def test_conversation_without_messages(seeded_client, lib, seed):
    empty = [c for c in seed["convs"].values() if c["last_message_content"] is None]
    assert empty, f"no conversation with last_message_content null among {len(seed['convs'])}"
    for item in empty:
        cid = item["conversation_id"]
        p = seeded_client.messages_page(cid)
        assert p["data"] == [] and p["total"] == 0 and p["next_cursor"] is None, p
        status, conv, _ = seeded_client.call("GET", f"/api/conversations/{cid}")
        assert status == 200, conv
        assert conv["last_message_at"] is None, conv
        assert conv["last_message_content"] is None, conv
        assert conv["last_message_id"] is None, conv
        lib.check_time(conv["created_at"])
        assert {conv["user1_id"], conv["user2_id"]} == {item["user1_id"], item["user2_id"]}
        assert cid == lib.derive_conversation_id(item["user1_id"], item["user2_id"])


def _is_emoji(ch):
    return ord(ch) >= 0x1F000 or unicodedata.category(ch) == "So"


def test_special_characters_conversation(seeded_client, lib, seed):
    found = []
    for cid, item in seed["convs"].items():
        msgs = lib.walk_messages(seeded_client, cid, limit=100)
        contents = [m["content"] for m in msgs]
        times = [m["created_at"] for m in msgs]
        facts = {
            "empty": "" in contents,
            "4096A": "A" * 4096 in contents,
            "emoji": any(any(_is_emoji(ch) for ch in c) for c in contents),
            "special": any(any(ch in c for ch in '"\\<>&\'\n\t') or any(ord(ch) > 127 for ch in c)
                           for c in contents),
            "same_time": len(set(times)) < len(times),
        }
        if all(facts.values()):
            found.append((cid, msgs))
    assert len(found) == 1, f"expected one special conversation, found {len(found)}"
    cid, msgs = found[0]
    keys = [lib.timeuuid_key(m["message_id"]) for m in msgs]
    assert all(a > b for a, b in zip(keys, keys[1:])), "ids not strictly decreasing"
    for m in msgs:
        lib.check_message(m)
    # equal timestamps must not break paging: walk one at a time
    assert lib.walk_messages(seeded_client, cid, limit=1) == msgs
    status, conv, _ = seeded_client.call("GET", f"/api/conversations/{cid}")
    assert conv["last_message_id"] == msgs[0]["message_id"]
    assert conv["last_message_content"] == msgs[0]["content"]


def test_seeded_conversation_lists_consistent(seeded_client, lib, seed):
    for name, items in seed["lists"].items():
        uid = seed["ids"][name]
        ids = [c["conversation_id"] for c in items]
        assert len(ids) == len(set(ids))
        for c in items:
            assert c["user1_id"] == uid and c["user2_id"] != uid, c
            assert c["conversation_id"] == lib.derive_conversation_id(c["user1_id"], c["user2_id"])
        with_msgs = [c for c in items if c["last_message_content"] is not None]
        t = [lib.parse_time(c["last_message_at"]) for c in with_msgs]
        assert t == sorted(t, reverse=True), (name, [c["last_message_at"] for c in with_msgs])
        for c in with_msgs:
            newest = seeded_client.messages_page(c["conversation_id"], limit=1)["data"][0]
            assert c["last_message_content"] == newest["content"]
            assert c["last_message_at"] == newest["created_at"]
    assert {lib.derive_conversation_id(seed["ids"]["alice"], seed["ids"]["bob"]),
            lib.derive_conversation_id(seed["ids"]["bob"], seed["ids"]["carol"])} <= set(seed["convs"])


def _normalised(client, lib):
    """Seeded content independent of generated ids: per conversation, the
    participants' names and the message contents newest first."""
    users, convs, _ = discover(client, lib)
    names = {}
    out = {}
    for cid, item in convs.items():
        pair = []
        for uid in (item["user1_id"], item["user2_id"]):
            if uid not in names:
                status, u, _ = client.call("GET", f"/api/users/{uid}")
                assert status == 200, u
                names[uid] = u["username"]
            pair.append(names[uid])
        msgs = lib.walk_messages(client, cid, limit=100)
        out[tuple(sorted(pair))] = [(names.get(m["sender_id"], m["sender_id"]), m["content"]) for m in msgs]
    return out


def test_seed_twice_does_not_duplicate(server_factory, lib, seeded_client):
    # fresh dir seeded twice == the module's dir seeded once
    d = server_factory.new_dir("seed-twice")
    server_factory.seed(d)
    server_factory.seed(d)
    srv = server_factory.start(d)
    c = srv.client()
    twice = _normalised(c, lib)
    users, convs, lists = discover(c, lib)
    ids = sorted({u["user_id"] for u in users.values()} |
                 {x["user2_id"] for items in lists.values() for x in items})
    snap1 = lib.snapshot(c, ids, usernames=SEED_USERS)
    c.close()
    srv.stop_and_check()
    assert twice == _normalised(seeded_client, lib)
    ab = tuple(sorted(["alice", "bob"]))
    assert len(twice[ab]) == 28

    # seeding again a dir that already has data (and was served) changes nothing
    server_factory.seed(d)
    srv = server_factory.start(d)
    c = srv.client()
    snap2 = lib.snapshot(c, ids, usernames=SEED_USERS)
    c.close()
    srv.stop_and_check()
    assert snap2 == snap1
