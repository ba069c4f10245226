"""Drop-in compatibility with the FastAPI implementation's keyspace, checked
with the official DataStax Python driver:
 - rows our server writes read back correctly through the driver, in the
   FastAPI tables' format;
 - rows written through the driver the way the FastAPI implementation writes
   them are served correctly by our server (after `messenger schema`, which
   adds our tables and indexes the existing data)."""
import datetime
import hashlib
import uuid

from support.server import run_messenger
from support.store import new_keyspace

# The FastAPI implementation's DDL (scripts/setup_db.py), as it creates them.
FASTAPI_TABLES = [
    "CREATE TABLE IF NOT EXISTS {ks}.users (user_id uuid PRIMARY KEY, username text)",
    """CREATE TABLE IF NOT EXISTS {ks}.conversations_by_user (
        user_id uuid, conversation_id uuid, other_user_id uuid, last_message text, last_updated timestamp,
        PRIMARY KEY (user_id, conversation_id)) WITH CLUSTERING ORDER BY (conversation_id DESC)""",
    """CREATE TABLE IF NOT EXISTS {ks}.messages_by_conversation (
        conversation_id uuid, message_id timeuuid, sender_id uuid, receiver_id uuid, content text,
        created_at timestamp, PRIMARY KEY (conversation_id, message_id)) WITH CLUSTERING ORDER BY (message_id DESC)""",
    "CREATE TABLE IF NOT EXISTS {ks}.conversation_metadata (conversation_id uuid PRIMARY KEY, created_at timestamp)",
]


def conversation_id(a, b):
    x = sorted([str(a), str(b)])
    return uuid.UUID(hashlib.sha256((x[0] + x[1]).encode()).hexdigest()[:32])


def ms(dt):
    """A driver datetime (naive UTC) as Unix milliseconds."""
    return int(dt.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000 + 0.5)


def iso_ms(s):
    return ms(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ"))


def test_our_writes_read_through_the_driver(start_server, driver):
    ks = new_keyspace()
    srv = start_server(ks)
    c = srv.client()
    st, alice, _ = c.call("POST", "/api/users", {"username": "alice"})
    assert st == 201
    st, bob, _ = c.call("POST", "/api/users", {"username": "bob"})
    assert st == 201
    sent = []
    for i, text in enumerate(["hello", "", "émoji 😀 \"quoted\"\nline"]):
        a, b = (alice, bob) if i % 2 == 0 else (bob, alice)
        st, m, _ = c.call("POST", "/api/messages/", {"sender_id": a["user_id"], "receiver_id": b["user_id"], "content": text})
        assert st == 201, m
        sent.append(m)
    c.close()
    cid = uuid.UUID(sent[0]["conversation_id"])
    assert cid == conversation_id(alice["user_id"], bob["user_id"])

    driver.set_keyspace(ks)
    rows = list(driver.execute("SELECT * FROM messages_by_conversation WHERE conversation_id = %s", [cid]))
    assert [str(r.message_id) for r in rows] == [m["message_id"] for m in reversed(sent)]  # DESC clustering
    for r, m in zip(rows, reversed(sent)):
        assert r.message_id.version == 1
        assert str(r.sender_id) == m["sender_id"] and str(r.receiver_id) == m["receiver_id"]
        assert r.content == m["content"]
        assert ms(r.created_at) == iso_ms(m["created_at"])
    last = sent[-1]
    for me, other in [(alice, bob), (bob, alice)]:
        r = driver.execute("SELECT * FROM conversations_by_user WHERE user_id = %s AND conversation_id = %s",
                           [uuid.UUID(me["user_id"]), cid]).one()
        assert r is not None
        assert str(r.other_user_id) == other["user_id"]
        assert r.last_message == last["content"]
        assert ms(r.last_updated) == iso_ms(last["created_at"])
    meta = driver.execute("SELECT * FROM conversation_metadata WHERE conversation_id = %s", [cid]).one()
    assert meta is not None and ms(meta.created_at) == iso_ms(sent[0]["created_at"])
    users = {str(r.user_id): r.username for r in driver.execute("SELECT * FROM users")}
    assert users == {alice["user_id"]: "alice", bob["user_id"]: "bob"}


def write_like_fastapi(driver, ks, sender, receiver, content, when):
    """What the FastAPI implementation's MessageModel.create_message writes."""
    cid = conversation_id(sender, receiver)
    mid = uuid.uuid1()
    driver.execute(f"INSERT INTO {ks}.messages_by_conversation (conversation_id, message_id, sender_id, receiver_id, "
                   "content, created_at) VALUES (%s, %s, %s, %s, %s, %s)", [cid, mid, sender, receiver, content, when])
    for u, o in [(sender, receiver), (receiver, sender)]:
        driver.execute(f"INSERT INTO {ks}.conversations_by_user (user_id, conversation_id, last_message, last_updated, "
                       "other_user_id) VALUES (%s, %s, %s, %s, %s)", [u, cid, content, when, o])
    driver.execute(f"INSERT INTO {ks}.conversation_metadata (conversation_id, created_at) VALUES (%s, %s) IF NOT EXISTS",
                   [cid, when])
    return cid, mid


def test_fastapi_keyspace_served_unchanged(start_server, driver):
    ks = new_keyspace("f")
    driver.execute(f"CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': '1'}}")
    for ddl in FASTAPI_TABLES:
        driver.execute(ddl.format(ks=ks))
    names = ["alice", "bob", "carol", "dave"]
    ids = {n: uuid.uuid4() for n in names}
    for n in names:
        driver.execute(f"INSERT INTO {ks}.users (user_id, username) VALUES (%s, %s)", [ids[n], n])
    base = datetime.datetime(2025, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    # alice-bob: 25 messages; alice-carol: 1 message, later than all of them;
    # alice-dave: 1 message, earliest.
    ab = None
    for i in range(25):
        a, b = (ids["alice"], ids["bob"]) if i % 2 == 0 else (ids["bob"], ids["alice"])
        ab, _ = write_like_fastapi(driver, ks, a, b, f"m{i}", base + datetime.timedelta(minutes=10 + i))
    ac, _ = write_like_fastapi(driver, ks, ids["carol"], ids["alice"], "from carol", base + datetime.timedelta(hours=2))
    ad, _ = write_like_fastapi(driver, ks, ids["alice"], ids["dave"], "to dave", base)

    out = run_messenger("schema", "--cassandra-keyspace", ks)
    assert "failed" not in out.split("migration:")[-1].split(",")[-1] or " 0 failed" in out, out
    srv = start_server(ks, extra=["--no-schema"])
    c = srv.client()

    st, u, _ = c.call("GET", f"/api/users/{ids['bob']}")
    assert st == 200 and u == {"user_id": str(ids["bob"]), "username": "bob"}
    st, u, _ = c.call("GET", "/api/users?username=CAROL")  # found through the migrated name index
    assert st == 200 and u["user_id"] == str(ids["carol"])

    # Messages: newest first, 20 + 5, created_at as written.
    st, p1, _ = c.call("GET", f"/api/messages/conversation/{ab}?limit=20")
    assert st == 200 and p1["total"] == 20 and p1["next_cursor"]
    assert [m["content"] for m in p1["data"]] == [f"m{i}" for i in range(24, 4, -1)]
    assert iso_ms(p1["data"][0]["created_at"]) == ms(base + datetime.timedelta(minutes=34))
    st, p2, _ = c.call("GET", f"/api/messages/conversation/{ab}?limit=20&before_message_id={p1['next_cursor']}")
    assert st == 200 and [m["content"] for m in p2["data"]] == ["m4", "m3", "m2", "m1", "m0"]
    assert p2["next_cursor"] is None

    # Conversations by recency, from the migrated index: carol, bob, dave.
    st, lst, _ = c.call("GET", f"/api/conversations/user/{ids['alice']}")
    assert st == 200
    assert [x["conversation_id"] for x in lst["data"]] == [str(ac), str(ab), str(ad)]
    assert lst["data"][0]["last_message_content"] == "from carol"
    assert lst["data"][0]["user2_id"] == str(ids["carol"])
    assert iso_ms(lst["data"][2]["last_message_at"]) == ms(base)

    # One conversation: participants from its messages (FastAPI keeps none).
    st, conv, _ = c.call("GET", f"/api/conversations/{ad}")
    assert st == 200
    assert {conv["user1_id"], conv["user2_id"]} == {str(ids["alice"]), str(ids["dave"])}
    assert conv["last_message_content"] == "to dave"

    # A new message through our API moves alice-dave to the top, and the
    # FastAPI tables carry it in their own format.
    st, m, _ = c.call("POST", "/api/messages/", {"sender_id": str(ids["dave"]), "receiver_id": str(ids["alice"]),
                                                 "content": "back again"})
    assert st == 201 and m["conversation_id"] == str(ad)
    st, lst, _ = c.call("GET", f"/api/conversations/user/{ids['alice']}")
    assert [x["conversation_id"] for x in lst["data"]] == [str(ad), str(ac), str(ab)]
    r = driver.execute(f"SELECT last_message, last_updated FROM {ks}.conversations_by_user "
                       "WHERE user_id = %s AND conversation_id = %s", [ids["alice"], ad]).one()
    assert r.last_message == "back again" and ms(r.last_updated) == iso_ms(m["created_at"])
    c.close()
