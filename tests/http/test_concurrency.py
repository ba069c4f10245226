"""Concurrent clients: 8 x 500 sends, concurrent idempotent retries, races."""

import threading
import uuid

N_CLIENTS = 8
N_SENDS = 500


def run_threads(n, target):
    """Runs target(i, barrier) in n threads; returns the list of exceptions."""
    barrier = threading.Barrier(n)
    errors = []

    def wrap(i):
        try:
            target(i, barrier)
        except BaseException as e:  # collected and reported by the caller
            errors.append((i, repr(e)))
            barrier.abort()

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "client threads hung"
    return errors


def test_8_clients_x_500_sends(server, lib):
    setup = server.client()
    users = [setup.create_user()["user_id"] for _ in range(10)]
    # clients 0-3: each its own pair; clients 4-7 share the pair (8, 9),
    # 4 and 5 sending 8->9, 6 and 7 sending 9->8.
    routes = [(users[0], users[1]), (users[2], users[3]), (users[4], users[5]), (users[6], users[7]),
              (users[8], users[9]), (users[8], users[9]), (users[9], users[8]), (users[9], users[8])]
    results = [[] for _ in range(N_CLIENTS)]

    def client_loop(i, barrier):
        c = server.client(retry=False)  # its own keep-alive connection; no silent resends
        s, r = routes[i]
        barrier.wait(30)
        try:
            for seq in range(N_SENDS):
                status, m, _ = c.call("POST", "/api/messages/",
                                      {"sender_id": s, "receiver_id": r, "content": f"c{i}-{seq}"})
                assert status == 201, (i, seq, status, m)
                results[i].append(m)
        finally:
            c.close()

    errors = run_threads(N_CLIENTS, client_loop)
    assert not errors, errors[:5]

    all_ids = [m["message_id"] for res in results for m in res]
    assert len(all_ids) == len(set(all_ids)) == N_CLIENTS * N_SENDS, "duplicate message ids"

    sent_by_id = {m["message_id"]: m for res in results for m in res}
    conversations = {}
    for i, (s, r) in enumerate(routes):
        conversations.setdefault(lib.derive_conversation_id(s, r), []).append(i)
    assert len(conversations) == 5

    for cid, clients in conversations.items():
        msgs = lib.walk_messages(setup, cid, limit=100)     # newest first
        assert len(msgs) == N_SENDS * len(clients), (cid, len(msgs))
        ids = [m["message_id"] for m in msgs]
        assert len(set(ids)) == len(ids), "a message appears twice"
        assert set(ids) == {m["message_id"] for i in clients for m in results[i]}
        keys = [lib.timeuuid_key(x) for x in ids]
        assert all(a > b for a, b in zip(keys, keys[1:])), "ids not strictly decreasing newest-first"
        times = [lib.parse_time(m["created_at"]) for m in msgs]
        assert all(a >= b for a, b in zip(times, times[1:])), "created_at not non-increasing"
        for m in msgs:
            assert m == sent_by_id[m["message_id"]], m
        oldest_first = list(reversed(msgs))
        for i in clients:
            own = [int(m["content"].split("-")[1]) for m in oldest_first if m["content"].startswith(f"c{i}-")]
            assert own == list(range(N_SENDS)), f"client {i}'s messages out of order or missing"
        # the same set via after_message_id catch-up from the oldest
        out, cur = [oldest_first[0]], oldest_first[0]["message_id"]
        while cur is not None:
            p = setup.messages_page(cid, limit=100, after_message_id=cur)
            out.extend(p["data"])
            cur = p["next_cursor"]
        assert out == oldest_first
        # the conversation record names the newest message
        status, conv, _ = setup.call("GET", f"/api/conversations/{cid}")
        assert conv["last_message_id"] == msgs[0]["message_id"], conv
        assert conv["last_message_content"] == msgs[0]["content"], conv
    setup.close()


def test_keep_alive_connection_is_reused(server):
    c = server.client(retry=False)
    for _ in range(100):
        status, body, headers = c.call("GET", "/health")
        assert status == 200, body
    assert c.connects == 1, f"server closed the keep-alive connection ({c.connects} connects for 100 requests)"
    c.close()


def test_concurrent_retries_of_same_key_make_one_message(server, lib):
    setup = server.client()
    a = setup.create_user()["user_id"]
    b = setup.create_user()["user_id"]
    n = 16
    for round_ in range(5):
        key = f"race-{round_}-{uuid.uuid4()}"
        out = [None] * n

        def sender(i, barrier):
            c = server.client(retry=False)
            try:
                c.call("GET", "/health")  # connect before the barrier
                barrier.wait(30)
                out[i] = c.call("POST", "/api/messages/", {
                    "sender_id": a, "receiver_id": b, "content": f"round {round_}",
                    "client_message_id": key})[:2]
            finally:
                c.close()

        errors = run_threads(n, sender)
        assert not errors, errors
        statuses = sorted(s for s, _ in out)
        assert statuses == [200] * (n - 1) + [201], statuses
        bodies = [m for _, m in out]
        assert all(m == bodies[0] for m in bodies), "retries returned different messages"
    msgs = lib.walk_messages(setup, lib.derive_conversation_id(a, b))
    assert [m["content"] for m in msgs] == [f"round {r}" for r in range(4, -1, -1)]
    setup.close()


def test_concurrent_same_key_different_content_one_wins(server, lib):
    setup = server.client()
    a = setup.create_user()["user_id"]
    b = setup.create_user()["user_id"]
    n = 12
    key = f"conflict-{uuid.uuid4()}"
    out = [None] * n

    def sender(i, barrier):
        c = server.client(retry=False)
        try:
            c.call("GET", "/health")
            barrier.wait(30)
            out[i] = c.call("POST", "/api/messages/", {
                "sender_id": a, "receiver_id": b, "content": f"variant {i}", "client_message_id": key})[:2]
        finally:
            c.close()

    errors = run_threads(n, sender)
    assert not errors, errors
    statuses = sorted(s for s, _ in out)
    assert statuses == [201] + [409] * (n - 1), statuses
    winner = next(m for s, m in out if s == 201)
    msgs = lib.walk_messages(setup, lib.derive_conversation_id(a, b))
    assert msgs == [winner]
    setup.close()


def test_concurrent_username_race_one_wins(server, lib):
    base = "Race" + uuid.uuid4().hex[:10]
    variants = [base, base.lower(), base.upper(), base.swapcase()] * 3
    out = [None] * len(variants)

    def creator(i, barrier):
        c = server.client(retry=False)
        try:
            c.call("GET", "/health")
            barrier.wait(30)
            out[i] = c.call("POST", "/api/users", {"username": variants[i]})[:2]
        finally:
            c.close()

    errors = run_threads(len(variants), creator)
    assert not errors, errors
    statuses = sorted(s for s, _ in out)
    assert statuses == [201] + [409] * (len(variants) - 1), statuses
    winner = next(m for s, m in out if s == 201)
    c = server.client()
    status, found, _ = c.call("GET", f"/api/users?username={base.lower()}")
    assert status == 200 and found == winner
    c.close()
