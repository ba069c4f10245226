"""Real-time events (issue 5): GET /api/events as Server-Sent Events.

Through the SSE client of tests/support/sse.py (raw socket, HTTP/1.1 with
chunked or plain bodies, a reader thread per stream, bounded waits
everywhere), checks: the response headers and the `retry:` preamble,
delivery to both participants and to no one else, heartbeats, resuming with Last-Event-ID (header or query) across several
conversations with no gap and no duplicate while reconnecting under load, the
reset after more than 1000 missed messages, auth errors, auth-off mode, a
client that never reads, many streams at once, and SIGTERM with open streams.
"""
import os
import random
import socket
import threading
import time
import uuid

import pytest

from support.checks import timeuuid_key
from support.factories import make_account, send_many
from support.fixtures import streams_fixture
from support.server import AUTH_ARGS, ServerProcess
from support.sse import EOF

streams = streams_fixture()  # streams(port, ...) -> an SSEStream, closed after the test


def assert_event_is(block, msg, raw=None):
    assert block.event == "message", block
    assert block.id == msg["message_id"], (block.id, msg)
    assert len(block.data_lines) == 1, f"data must be one line: {block!r}"
    assert block.json() == msg, (block.data, msg)
    if raw is not None:
        assert block.data.encode() == raw.strip(), (
            "data is not exactly the REST rendering", block.data, raw)


def send(acct, to, content, **extra):
    """Sends as acct; returns (message, raw REST body)."""
    m = acct.client.send(acct.user_id, to.user_id, content, **extra)
    return m, acct.client.last_raw


def rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            k, _, v = ln.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out[k] = int(v.split()[0]) * 1024
    return out


# --------------------------------------------------------------------------
# the stream
# --------------------------------------------------------------------------

def test_headers_and_preamble(auth_server, new_account, streams):
    a = new_account()
    s = streams(auth_server.port, a.token)
    assert s.status() == 200
    h = s.parser.headers
    assert h.get("content-type", "").split(";")[0].strip() == "text/event-stream", h
    assert "no-store" in h.get("cache-control", ""), h
    s.open()
    # nothing but a heartbeat or an event after the preamble
    b = s.next(5)
    assert b is not EOF and b.is_heartbeat and b.comments == ["keep-alive"], b
    assert bytes(s.parser.body).startswith(b"retry: 2000\n\n: keep-alive\n\n"), bytes(s.parser.body)[:80]


def test_heartbeats(auth_server, new_account, streams):
    a = new_account()
    s = streams(auth_server.port, a.token).open()
    t0 = time.monotonic()
    beats = []
    while len(beats) < 3:
        b = s.next(5)
        assert b is not EOF and b.is_heartbeat, f"only heartbeats expected on an idle stream, got {b!r}"
        beats.append(b.t)
    took = beats[-1] - t0
    assert 1.5 <= took <= 8, f"3 heartbeats with --sse-heartbeat 1 took {took:.2f}s"


def test_both_participants_get_each_message_and_no_one_else(auth_server, new_account, streams):
    a, b, c, d = new_account(), new_account(), new_account(), new_account()
    sa = streams(auth_server.port, a.token).open()
    sa2 = streams(auth_server.port, a.token).open()   # a second tab of a
    sb = streams(auth_server.port, b.token).open()
    sc = streams(auth_server.port, c.token).open()
    m1, raw1 = send(a, b, "hello b \u00e9 \"quoted\"\n<tag>")
    for s in (sa, sa2, sb):
        assert_event_is(s.next_message(), m1, raw1)
    m2, raw2 = send(b, a, "hello a")
    for s in (sa, sa2, sb):
        assert_event_is(s.next_message(), m2, raw2)
    # a refused send is no event; an idempotent replay is no new event
    st, body, _ = a.client.call("POST", "/api/messages/",
                                {"sender_id": b.user_id, "receiver_id": a.user_id, "content": "forged"})
    assert st == 403, body
    m3, raw3 = send(a, b, "keyed", client_message_id="k1")
    st, again, _ = a.client.call("POST", "/api/messages/",
                                 {"receiver_id": b.user_id, "content": "keyed", "client_message_id": "k1"})
    assert st == 200 and again == m3, (st, again)
    m4, raw4 = send(b, a, "after the replay")
    for s in (sa, sa2, sb):
        assert_event_is(s.next_message(), m3, raw3)
        assert_event_is(s.next_message(), m4, raw4)
    # the third user's stream saw none of those: its first event is its own
    m5, raw5 = send(c, d, "c to d")
    first = sc.next_message()
    assert first.id != m1["message_id"] and first.id != m2["message_id"], \
        "a third user's stream received someone else's message"
    assert_event_is(first, m5, raw5)


def test_no_token_bad_token_and_bad_last_event_id(auth_server, new_account, streams):
    s = streams(auth_server.port)
    st, headers, body = s.error()
    assert st == 401 and body == {"detail": "Not authenticated"}, (st, body)
    assert headers.get("www-authenticate", "").startswith("Bearer"), headers
    s = streams(auth_server.port, "x" * 43)
    st, headers, body = s.error()
    assert st == 401 and body == {"detail": "Invalid or expired token"}, (st, body)
    assert headers.get("www-authenticate", "").startswith("Bearer"), headers
    a = new_account()
    bad = ["garbage", str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000",
           "6ba7b810-9dad-11d1-80b4", "6ba7b810-9dad-11d1-80b4-00c04fd430c8x"]
    for v in bad:
        for kw in ({"last_event_id": v}, {"query": "?last_event_id=" + v}):
            s = streams(auth_server.port, a.token, **kw)
            st, _, body = s.error()
            assert st == 422, (kw, st, body)
            assert isinstance(body, dict) and isinstance(body.get("detail"), str), body


def test_resume_replays_missed_messages_oldest_first(auth_server, new_account, streams):
    a, b, c, d = new_account(), new_account(), new_account(), new_account()
    marker, _ = send(a, b, "marker")
    sent = []
    for i, (frm, to) in enumerate([(a, b), (b, a), (c, a), (a, c), (b, a), (a, c), (c, a)]):
        sent.append(send(frm, to, f"missed {i}"))
        if i == 3:
            send(b, d, "not a's business")  # b's other conversation
    ids = [m["message_id"] for m, _ in sent]
    assert ids == sorted(ids, key=timeuuid_key)

    for how in ("header", "query"):
        if how == "header":
            s = streams(auth_server.port, a.token, last_event_id=marker["message_id"]).open()
        else:
            s = streams(auth_server.port, a.token, query=f"?last_event_id={marker['message_id']}").open()
        got = s.messages(len(sent))
        for blk, (m, raw) in zip(got, sent):
            assert_event_is(blk, m, raw)
        live, raw = send(c, a, f"live after the {how} resume")
        assert_event_is(s.next_message(), live, raw)
        sent.append((live, raw))
        s.close()

    # resuming from the newest id replays nothing: the next event is live
    last = sent[-1][0]["message_id"]
    s = streams(auth_server.port, a.token, last_event_id=last.upper()).open()
    live, raw = send(a, b, "live only")
    assert_event_is(s.next_message(), live, raw)


def v1_at(ticks):
    """A version-1 UUID at `ticks` (100 ns since 1582-10-15)."""
    return str(uuid.UUID(fields=(ticks & 0xFFFFFFFF, (ticks >> 32) & 0xFFFF, ((ticks >> 48) & 0x0FFF) | 0x1000,
                                 0x80, 0x01, 0x0123456789AB)))


def test_resume_that_missed_nothing_goes_live(auth_server, new_account, streams):
    """A resume with nothing to catch up (no conversation at all, or every
    one older than the Last-Event-ID) opens, sends nothing, and goes live.
    Such a resume once read the first of its zero conversations through a
    NULL pointer: one request with any v1 Last-Event-ID crashed the server
    (found by schemathesis, issue 15)."""
    a, b, loner = new_account(), new_account(), new_account()
    m, _ = send(a, b, "before")
    one_second_later = v1_at(uuid.UUID(m["message_id"]).time + 10_000_000)
    for who, last in ((loner, m["message_id"]), (a, one_second_later)):
        s = streams(auth_server.port, who.token, last_event_id=last).open()
        live, raw = send(b, who, "live")
        assert_event_is(s.next_message(), live, raw)
        s.close()
    assert auth_server.alive


def test_reconnecting_under_load_no_gap_no_duplicate(auth_server, new_account, streams):
    a, b, c = new_account(), new_account(), new_account()
    marker, _ = send(b, a, "marker")
    # the sender thread has clients of its own
    sb = auth_server.client(token=b.token)
    sc = auth_server.client(token=c.token)
    sa = auth_server.client(token=a.token)
    sent, errors = [], []
    plan = [(sa, a, b), (sb, b, a), (sc, c, a), (sa, a, c)]

    def sender():
        try:
            for i in range(50):
                cl, frm, to = plan[i % len(plan)]
                sent.append(cl.send(frm.user_id, to.user_id, f"storm {i}"))
                time.sleep(random.uniform(0.002, 0.02))
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    segments = []
    last = marker["message_id"]
    deadline = time.monotonic() + 90
    rng = random.Random(5)
    try:
        while True:
            assert time.monotonic() < deadline, \
                f"received {sum(map(len, segments))} of 50 messages in 90 s"
            s = streams(auth_server.port, a.token, last_event_id=last).open()
            seg = []
            want = rng.randint(1, 6)
            stop_at = time.monotonic() + rng.uniform(0.02, 0.3)
            while len(seg) < want and time.monotonic() < stop_at:
                try:
                    blk = s.next(max(0.01, stop_at - time.monotonic()))
                except AssertionError:
                    break
                assert blk is not EOF, "the server ended a stream"
                if blk.is_heartbeat:
                    continue
                assert blk.event == "message", blk
                seg.append(blk)
                last = blk.id
            s.close()
            segments.append(seg)
            if not t.is_alive() and sum(map(len, segments)) >= len(sent):
                break
    finally:
        t.join(60)
        for cl in (sa, sb, sc):
            cl.close()
    assert not errors, f"sending failed: {errors[0]!r}"
    assert len(sent) == 50
    by_id = {m["message_id"]: m for m in sent}
    for seg in segments:
        ids = [blk.id for blk in seg]
        assert len(ids) == len(set(ids)), f"a duplicate within one connection: {ids}"
        for blk in seg:
            assert blk.json() == by_id.get(blk.id), blk
    got = [blk.id for seg in segments for blk in seg]
    dups = {x for x in got if got.count(x) > 1}
    assert not dups, f"{len(dups)} messages arrived twice across reconnections"
    missing = [m["message_id"] for m in sent if m["message_id"] not in set(got)]
    assert not missing, f"{len(missing)} of 50 messages never arrived (a gap on resume)"
    assert got == [m["message_id"] for m in sent], "the messages arrived out of order"
    assert len(segments) > 5, "the test did not reconnect often enough to mean anything"


def test_more_than_1000_missed_is_a_reset(auth_server, new_account, streams):
    a, b = new_account(), new_account()
    marker, _ = send(a, b, "marker")
    bulk = send_many(auth_server, b, a, 1000)
    expect = sorted((m["message_id"] for m in bulk), key=timeuuid_key)
    # exactly 1000 missed: all replayed, oldest first
    s1 = streams(auth_server.port, a.token, last_event_id=marker["message_id"]).open()
    got = s1.messages(1000, timeout=60)
    assert [x.id for x in got] == expect, "1000 missed messages were not replayed in timeuuid order"
    # the 1001st: live on that stream
    m, raw = send(a, b, "number 1001")
    assert_event_is(s1.next_message(), m, raw)
    # now 1001 are missed since the marker: a reset, then live events
    s2 = streams(auth_server.port, a.token, last_event_id=marker["message_id"]).open()
    blk = s2.next_nonheartbeat()
    assert blk is not EOF and blk.event == "reset", f"expected `event: reset`, got {blk!r}"
    assert blk.id is None, blk
    detail = blk.json()
    assert isinstance(detail, dict) and isinstance(detail.get("detail"), str), blk.data
    live, raw = send(b, a, "after the reset")
    assert_event_is(s2.next_message(), live, raw)
    assert_event_is(s1.next_message(), live, raw)


# --------------------------------------------------------------------------
# many streams, slow clients, shutdown
# --------------------------------------------------------------------------

def test_200_concurrent_streams(auth_server, streams):
    accts = [make_account(auth_server) for _ in range(40)]
    try:
        per = 5
        ss = [[streams(auth_server.port, ac.token) for _ in range(per)] for ac in accts]
        for group in ss:
            for s in group:
                s.open(30)
        sent = {}
        for i in range(0, len(accts), 2):
            m, raw = send(accts[i], accts[i + 1], f"pair {i}")
            sent[i] = sent[i + 1] = (m, raw)
        for i, group in enumerate(ss):
            for s in group:
                assert_event_is(s.next_message(30), *sent[i])
        assert auth_server.alive
    finally:
        for ac in accts:
            ac.close()


@pytest.fixture(scope="module")
def small_pending_server(_module_tmp):
    d = _module_tmp / "pending"
    d.mkdir()
    # --sse-max-pending must hold a round of events (50 x 12 kB: the reading
    # client, a Python thread beside four sender threads, may fall a whole
    # round behind on a slow build), and it is far below the 12 MB sent to a
    # client that never reads.
    # ASan keeps freed memory in quarantine; that is not what is measured here
    env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0"}
    srv = ServerProcess(d, log_dir=_module_tmp, auth=True, env=env,
                        args=AUTH_ARGS + ("--sse-max-pending", "1048576", "--max-content-bytes", "12000")).start()
    yield srv
    srv.stop_and_check()


def test_a_client_that_never_reads_is_dropped(small_pending_server, streams):
    if os.environ.get("MESSENGER_TEST_SANITIZER") == "thread":
        pytest.skip("measures the server's RSS: ThreadSanitizer's shadow memory makes that meaningless")
    srv = small_pending_server
    a, b = make_account(srv), make_account(srv)
    try:
        reader = streams(srv.port, a.token).open()
        stuck = streams(srv.port, a.token, rcvbuf=4096, read=False)
        content = "x" * 12000
        # warm up (allocator arenas, store pages) before measuring
        warm = send_many(srv, b, a, 50, content)
        reader.messages(len(warm), timeout=60)
        before = rss(srv.pid)
        # in rounds that the reading client keeps up with (it must not look
        # like a client that does not read)
        n, sent, got = 1000, [], []
        for _ in range(n // 50):
            sent += send_many(srv, b, a, 50, content)
            got += reader.messages(50, timeout=60)
        assert {x.id for x in got} == {m["message_id"] for m in sent}, "a reading client missed events"
        after = rss(srv.pid)
        st, body, _ = b.client.call("GET", "/health")
        assert st == 200, body
        # the stuck client: read what the kernel buffered, then the end
        stuck.sock.settimeout(10)
        received, ended = 0, False
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                chunk = stuck.sock.recv(1 << 20)
                if not chunk:
                    ended = True
                    break
                received += len(chunk)
        except ConnectionResetError:
            ended = True
        except socket.timeout:
            pass
        total = (n + len(warm)) * len(content)
        assert ended, (f"a client that never read was not disconnected (it received {received} "
                       f"bytes of about {total}, and the stream is still open)")
        assert received < total, "the stuck client received everything: nothing was ever dropped"
        undelivered = total - received
        growth = after["RssAnon"] - before["RssAnon"]
        assert growth < undelivered / 2, (
            f"server memory grew by {growth >> 10} KiB while {undelivered >> 10} KiB were "
            f"undeliverable to the stuck client (VmRSS {before['VmRSS'] >> 10} -> {after['VmRSS'] >> 10} KiB)")
        # still healthy, still delivering
        m, raw = send(b, a, "after the drop")
        assert_event_is(reader.next_message(), m, raw)
    finally:
        a.close()
        b.close()


def test_sigterm_with_open_streams_exits_0(server_factory, streams):
    d = server_factory.new_dir("sse-stop")
    srv = server_factory.start(d, args=AUTH_ARGS, auth=True)
    a, b = make_account(srv), make_account(srv)
    try:
        ss = [streams(srv.port, a.token).open() for _ in range(3)] + \
             [streams(srv.port, b.token).open() for _ in range(3)]
        stuck = streams(srv.port, b.token, rcvbuf=4096, read=False)
        m, raw = send(a, b, "before the stop")
        for s in ss:
            assert_event_is(s.next_message(), m, raw)
        t0 = time.monotonic()
        rc = srv.stop()
        took = time.monotonic() - t0
        assert rc == 0, f"exit code {rc!r} on SIGTERM with open streams (took {took:.1f}s)\n{srv.log_text()}"
        for s in ss:
            assert s.wait_eof(5), "a stream was not ended at shutdown"
        del stuck
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------
# auth off
# --------------------------------------------------------------------------

def test_auth_off_streams_by_user_id(server, client, streams):
    a, b = client.create_user(), client.create_user()
    s = streams(server.port, query=f"?user_id={a['user_id']}").open()
    m = client.send(a["user_id"], b["user_id"], "open mode")
    raw = client.last_raw
    assert_event_is(s.next_message(), m, raw)
    # resume works the same way
    m2 = client.send(b["user_id"], a["user_id"], "missed")
    raw2 = client.last_raw
    r = streams(server.port, query=f"?user_id={a['user_id']}&last_event_id={m['message_id']}").open()
    assert_event_is(r.next_message(), m2, raw2)
    assert_event_is(s.next_message(), m2, raw2)
    for q in ("", "?user_id=", "?user_id=nope", f"?last_event_id={m['message_id']}"):
        e = streams(server.port, query=q)
        st, _, body = e.error()
        assert st == 422, (q, st, body)
        assert isinstance(body.get("detail"), str), body
