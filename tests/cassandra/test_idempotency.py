"""Idempotent sends on Cassandra (client_message_id), when something fails
(issue 14, "atomicity you can rely on"):
 - a send that fails its checks (an unknown receiver) does not reserve its
   key, so the same key still works for the right receiver;
 - a send that wrote only some of its partitions is completed by the retry;
 - a send that fails half-way, after its key was reserved and before its
   message was written, is completed by the retry, which answers 201 and
   publishes the message to event streams exactly once (the attempt that
   claims the key's event publishes: cass_send.c's on_send_claim).
The half-way failure is real: a table the send reads is dropped under the
running server, then created again."""
import time
import uuid


from support.factories import make_account
from support.server import AUTH_ARGS
from support.sse import EOF, SSEStream
from support.store import new_keyspace

METADATA_DDL = "CREATE TABLE {ks}.conversation_metadata (conversation_id uuid PRIMARY KEY, created_at timestamp)"


def assert_no_message_for(stream, seconds):
    """Nothing but heartbeats comes on the stream for `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            blk = stream.next(left)
        except AssertionError:
            return  # nothing at all came
        assert blk is not EOF and blk.is_heartbeat, ("a second event for one message", blk)


def test_a_send_to_an_unknown_user_does_not_burn_its_key(start_server):
    srv = start_server(new_keyspace())
    c = srv.client()
    a = c.create_user()["user_id"]
    b = c.create_user()["user_id"]
    key = "k-" + uuid.uuid4().hex
    st, body, _ = c.call("POST", "/api/messages/", {"sender_id": a, "receiver_id": str(uuid.uuid4()),
                                                   "content": "hello", "client_message_id": key})
    assert st == 404, body
    st, m, _ = c.call("POST", "/api/messages/", {"sender_id": a, "receiver_id": b, "content": "hello",
                                                "client_message_id": key})
    assert st == 201, ("the refused send reserved the key", st, m)
    st, again, _ = c.call("POST", "/api/messages/", {"sender_id": a, "receiver_id": b, "content": "hello",
                                                    "client_message_id": key})
    assert st == 200 and again["message_id"] == m["message_id"], (st, again)
    c.close()


RECENCY_DDL = ("CREATE TABLE {ks}.conversation_recency (user_id uuid, tier int, pos bigint, conversation_id blob, "
               "activity bigint, other_user_id uuid, last_message text, PRIMARY KEY (user_id, tier, pos, conversation_id)) "
               "WITH CLUSTERING ORDER BY (tier ASC, pos DESC, conversation_id DESC)")


def test_a_retry_completes_a_send_that_wrote_only_some_partitions(start_server, driver):
    """A send writes three partitions, each its own batch (no logged batch:
    see cass_internal.h). With the users' list table gone, the message is
    written and both users' list rows are not: 503. The retry with the same
    key writes them (201: no attempt had published it): the new conversation
    is in both lists, with the message as its last one, and the message
    exists once."""
    ks = new_keyspace()
    srv = start_server(ks)
    c = srv.client()
    a = c.create_user()["user_id"]
    b = c.create_user()["user_id"]
    body = {"sender_id": a, "receiver_id": b, "content": "half", "client_message_id": "k-" + uuid.uuid4().hex}
    driver.execute(f"DROP TABLE {ks}.conversation_recency")
    try:
        st, resp, _ = c.call("POST", "/api/messages/", body)
        assert st == 503, (st, resp)
    finally:
        driver.execute(RECENCY_DDL.format(ks=ks))
    # Half-written: a conversation no list shows.
    assert c.conversations_page(a)["data"] == []
    st, m, _ = c.call("POST", "/api/messages/", body)
    assert st == 201, ("the retry completed the send, and claimed its event", st, m)
    st, again, _ = c.call("POST", "/api/messages/", body)
    assert st == 200 and again["message_id"] == m["message_id"], ("a further retry is a replay", st, again)
    for user, other in ((a, b), (b, a)):
        rows = c.conversations_page(user)["data"]
        assert [(r["conversation_id"], r["last_message_content"])
                for r in rows] == [(m["conversation_id"], "half")], (user, rows)
    page = c.messages_page(m["conversation_id"])
    assert [x["message_id"] for x in page["data"]] == [m["message_id"]], page
    c.close()


def test_a_retry_that_completes_a_half_failed_send_publishes_it_once(start_server, driver):
    ks = new_keyspace()
    srv = start_server(ks, extra=AUTH_ARGS, auth=True)
    a, b = make_account(srv), make_account(srv)
    stream = SSEStream(srv, b.token).open()
    try:
        key = "k-" + uuid.uuid4().hex
        body = {"receiver_id": b.user_id, "content": "through a failure", "client_message_id": key}
        driver.execute(f"DROP TABLE {ks}.conversation_metadata")
        try:
            st, resp, _ = a.client.call("POST", "/api/messages/", body)
            assert st == 503, (st, resp)  # the key is reserved, the message not written
        finally:
            driver.execute(METADATA_DDL.format(ks=ks))
        st, m, _ = a.client.call("POST", "/api/messages/", body)
        assert st == 201, ("the completing retry", st, m)
        ev = stream.next_message()
        assert ev.id == m["message_id"] and ev.json()["content"] == "through a failure", ev
        # A further retry is a replay: the same message, and no new event.
        st, again, _ = a.client.call("POST", "/api/messages/", body)
        assert st == 200 and again["message_id"] == m["message_id"], (st, again)
        assert_no_message_for(stream, 3)
        page = a.client.messages_page(m["conversation_id"])
        assert [x["message_id"] for x in page["data"]] == [m["message_id"]], page
    finally:
        stream.close()
        a.close()
        b.close()
