"""Real-time events across API instances (issue 5): two servers on one
Cassandra keyspace, sharing events through Redis pub/sub (--broker).

A stream on instance A receives what is sent through instance B and the other
way round; a client resumes on B with the Last-Event-ID it got from A; and
when Redis goes away and comes back, open streams are ended (the client
reconnects and catches up from the store) and live delivery works again.

Redis comes from scripts/redis (127.0.0.1:6390, MESSENGER_REDIS_PORT); it is
started here if it is not running, and stopped at the end only then. The
outage test stops and restarts it, so it runs last."""
import os
import socket
import subprocess
import time
import uuid

import pytest

from support.env import REPO_ROOT
from support.factories import login, register
from support.server import AUTH_ARGS, ServerProcess
from support.sse import EOF, SSEStream
from support.store import drop_keyspaces, new_keyspace

REDIS_SCRIPT = str(REPO_ROOT / "scripts" / "redis")
REDIS_PORT = int(os.environ.get("MESSENGER_REDIS_PORT", "6390"))
BROKER = f"redis://127.0.0.1:{REDIS_PORT}"


def redis(cmd, check=True):
    assert os.access(REDIS_SCRIPT, os.X_OK), f"{REDIS_SCRIPT} is missing"
    p = subprocess.run([REDIS_SCRIPT, cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if check:
        assert p.returncode == 0, f"scripts/redis {cmd} exited {p.returncode}: {p.stdout.decode()[-2000:]}"
    return p.returncode


def redis_ping(timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def redis_up():
    started = False
    if not redis_ping():
        redis("start")
        started = True
    wait_until(redis_ping, 30, "redis answering PING")
    yield BROKER
    if started:
        redis("stop", check=False)


class Account:
    """A user registered and logged in through srv, with a client of its own
    on each instance it uses."""

    def __init__(self, srv):
        c = srv.client()
        try:
            user, self.password = register(c)
            self.token = login(c, user["username"], self.password)["access_token"]
        finally:
            c.close()
        self.username = user["username"]
        self.user_id = user["user_id"]
        self.clients = {}

    def on(self, srv):
        """An authenticated client on srv (the token is valid on every instance)."""
        if srv.port not in self.clients:
            self.clients[srv.port] = srv.client(token=self.token)
        return self.clients[srv.port]

    def send(self, srv, to, content):
        c = self.on(srv)
        st, m, _ = c.call("POST", "/api/messages/", {"receiver_id": to.user_id, "content": content})
        assert st == 201, (srv.port, st, m)
        return m, c.last_raw

    def stream(self, srv, last_event_id=None):
        s = SSEStream(srv, self.token, last_event_id=last_event_id)
        s.open()
        return s

    def close(self):
        for c in self.clients.values():
            c.close()


def assert_event_is(block, msg, raw):
    assert block.event == "message", block
    assert block.id == msg["message_id"], (block.id, msg)
    assert block.json() == msg, (block.data, msg)
    assert block.data.encode() == raw.strip(), (block.data, raw)


@pytest.fixture(scope="module")
def pair_of_instances(redis_up, tmp_path_factory):
    """Instances A and B on one keyspace, both with the broker, with the
    broker known to carry events both ways."""
    ks = new_keyspace("ev")
    tmp = tmp_path_factory.mktemp("events-multi")

    def instance():
        # as conftest.py's start_server starts them: info-level logs, 30 s to stop
        return ServerProcess(keyspace=ks, log_dir=tmp, args=AUTH_ARGS + ("--broker", redis_up), auth=True,
                             log_level="info", shutdown_timeout=30.0).start()

    a = instance()
    b = instance()
    servers = [a, b]
    try:
        # The subscriptions come up in the background: wait until a probe sent
        # through one instance reaches a stream on the other, both ways.
        p, q = Account(a), Account(b)
        for src, dst in ((b, a), (a, b)):
            s = p.stream(dst)
            deadline = time.monotonic() + 30
            try:
                while True:
                    assert time.monotonic() < deadline, \
                        f"no event crossed from :{src.port} to :{dst.port} within 30 s\n{dst.log_text()}"
                    m, _ = q.send(src, p, "probe")
                    got = None
                    end = time.monotonic() + 1.0
                    while time.monotonic() < end:
                        try:
                            blk = s.next(max(0.01, end - time.monotonic()))
                        except AssertionError:
                            break
                        assert blk is not EOF, "probe stream ended"
                        if blk.id == m["message_id"]:
                            got = blk
                            break
                    if got:
                        break
            finally:
                s.close()
        p.close()
        q.close()
        yield a, b
    finally:
        codes = [(s, s.stop()) for s in servers]
        drop_keyspaces({ks})
        for s, code in codes:
            assert code == 0, f"server exit code {code}:\n{s.log_text()}"


def test_events_cross_instances(pair_of_instances):
    a, b = pair_of_instances
    alice, bob = Account(a), Account(b)
    streams = []
    try:
        # a token from one instance works on the other
        st, me, _ = bob.on(a).call("GET", "/api/auth/me")
        assert st == 200 and me["user_id"] == bob.user_id, (st, me)
        sa_alice = alice.stream(a)
        sb_alice = alice.stream(b)
        sb_bob = bob.stream(b)
        sa_bob = bob.stream(a)
        streams += [sa_alice, sb_alice, sb_bob, sa_bob]
        m1, raw1 = bob.send(b, alice, "through B")
        for s in streams:
            assert_event_is(s.next_message(), m1, raw1)
        m2, raw2 = alice.send(a, bob, "through A")
        for s in streams:
            assert_event_is(s.next_message(), m2, raw2)
        # a third user on either instance gets nothing: its first event is its own
        carol = Account(a)
        sc = carol.stream(b)
        streams.append(sc)
        m3, raw3 = bob.send(a, alice, "again through A")
        for s in streams[:4]:
            assert_event_is(s.next_message(), m3, raw3)
        m4, raw4 = carol.send(a, alice, "carol's own")
        assert_event_is(sc.next_message(), m4, raw4)
        carol.close()
    finally:
        for s in streams:
            s.close()
        alice.close()
        bob.close()


def test_resume_on_the_other_instance(pair_of_instances):
    a, b = pair_of_instances
    alice, bob, carol = Account(a), Account(b), Account(a)
    try:
        s = alice.stream(a)
        m1, raw1 = bob.send(b, alice, "seen on A")
        assert_event_is(s.next_message(), m1, raw1)
        s.close()
        missed = [bob.send(b, alice, "missed 1"), carol.send(a, alice, "missed 2"),
                  alice.send(a, carol, "missed 3"), bob.send(a, alice, "missed 4")]
        r = alice.stream(b, last_event_id=m1["message_id"])
        try:
            for m, raw in missed:
                assert_event_is(r.next_message(), m, raw)
            live, raw = carol.send(a, alice, "live through A")
            assert_event_is(r.next_message(), live, raw)
        finally:
            r.close()
    finally:
        for x in (alice, bob, carol):
            x.close()


def test_logout_on_one_instance_ends_streams_on_the_other(pair_of_instances):
    """A logout through B ends the token's stream on A (a session-end payload
    through the broker) within a second, and the token is refused on both."""
    a, b = pair_of_instances
    alice = Account(a)
    try:
        s = alice.stream(a)
        t0 = time.monotonic()
        st, body, _ = alice.on(b).call("POST", "/api/auth/logout")
        assert st == 204, (st, body)
        assert s.wait_eof(3), "the stream on the other instance outlived the logout"
        assert time.monotonic() - t0 < 1.5, f"ended {time.monotonic() - t0:.2f}s after the logout"
        s.close()
        for srv in (a, b):
            c = srv.client(token=alice.token)
            st, _, _ = c.call("GET", "/api/auth/me")
            c.close()
            assert st == 401, (srv.port, st)
    finally:
        alice.close()


def redis_kill9():
    """kill -9 of the Redis that scripts/redis started (no shutdown, no goodbye)."""
    cache = os.environ.get("MESSENGER_CACHE", os.path.expanduser("~/.cache/messenger"))
    pid = int(open(f"{cache}/redis/redis-{REDIS_PORT}.pid").read().strip())
    os.kill(pid, 9)


def id_key(message_id):
    """A timeuuid's place in message order (the server's uuid_sort_key):
    its time, then clock sequence and node."""
    u = uuid.UUID(message_id)
    return (u.time, u.bytes[8:])


def test_redis_killed_under_load_nothing_missed(pair_of_instances):
    """Four senders send without pause through both instances while four
    receivers stream (each resuming with its Last-Event-ID, on the other
    instance, whenever its stream ends); Redis is killed with SIGKILL in the
    middle and started again. Every acknowledged message reaches its receiver:
    the broker is at-most-once, the streams end when it is lost (and when a
    publisher lost events), and the store fills the gap. A reader told to
    reset (it fell more than 1000 messages behind) reloads through the REST
    API, as the web client does.

    A message comes twice only where the README says it may: the two
    instances publish in no common id order, so the last event before a
    reconnect can be older than one already received, and the resume (or
    reload) after it sends that one again. Any other repeat fails: one
    within a stream, or one not newer than the id the resume started from
    (a CI run once got 230 of those, stale events a publisher had queued
    while Redis was away and sent after the streams had caught up)."""
    import threading
    a, b = pair_of_instances
    servers = (a, b)
    pairs = [(Account(a), Account(b)) for _ in range(4)]   # (sender, receiver)
    acked = [[] for _ in pairs]
    got = [[] for _ in pairs]
    after = [[] for _ in pairs]   # per got entry: the id its stream or reload started after
    reconnects = [0] * len(pairs)
    resets = [0] * len(pairs)
    cids = [None] * len(pairs)
    stop_sending = threading.Event()
    stop_reading = threading.Event()
    failures = []

    def sender(i):
        snd, rcv = pairs[i]
        n = 0
        try:
            while not stop_sending.is_set():
                srv = servers[n % 2]
                st, m, _ = snd.on(srv).call("POST", "/api/messages/", {"receiver_id": rcv.user_id, "content": f"m{n}"})
                n += 1
                if st == 201:
                    acked[i].append(m["message_id"])
                    cids[i] = m["conversation_id"]
                else:   # a 503 while Redis is away would be wrong: sends do not need it
                    failures.append(f"sender {i}: {st} {m}")
                    return
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(f"sender {i}: {e!r}")

    def reload(i, rcv, last):
        """What a client does on `reset`: the conversation after its last id,
        page by page, from the REST API."""
        c = rcv.on(servers[0])
        if not last:   # nothing yet: the whole history, newest first, then in order
            history, cursor = [], ""
            while True:
                st, page, _ = c.call("GET", f"/api/messages/conversation/{cids[i]}?limit=100{cursor}")
                assert st == 200, (st, page)
                history.extend(x["message_id"] for x in page["data"])
                if not page["next_cursor"]:
                    break
                cursor = f"&before_message_id={page['next_cursor']}"
            got[i].extend(reversed(history))
            after[i].extend([None] * len(history))
            return history[0] if history else None
        start = last
        while True:
            st, page, _ = c.call("GET", f"/api/messages/conversation/{cids[i]}?limit=100&after_message_id={last}")
            assert st == 200, (st, page)
            got[i].extend(x["message_id"] for x in page["data"])
            after[i].extend([start] * len(page["data"]))
            if page["data"]:
                last = page["data"][-1]["message_id"]
            if not page["next_cursor"] or not page["data"]:
                return last

    def reader(i):
        rcv = pairs[i][1]
        last = None
        k = 0
        try:
            while not stop_reading.is_set():
                s = rcv.stream(servers[k % 2], last_event_id=last)
                start, in_stream = last, set()
                k += 1
                try:
                    while not stop_reading.is_set():
                        try:
                            blk = s.next(0.5)
                        except AssertionError:
                            continue          # quiet for a moment
                        if blk is EOF:
                            break
                        if blk.is_heartbeat:
                            continue
                        if blk.event == "reset":
                            resets[i] += 1
                            last = reload(i, rcv, last)
                            break
                        assert blk.event == "message", blk
                        assert blk.id not in in_stream, f"{blk.id} twice in one stream"
                        in_stream.add(blk.id)
                        got[i].append(blk.id)
                        after[i].append(start)
                        last = blk.id
                finally:
                    s.close()
                reconnects[i] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(f"reader {i}: {e!r}")

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(len(pairs))]
    senders = [threading.Thread(target=sender, args=(i,)) for i in range(len(pairs))]
    for t in readers:
        t.start()
    time.sleep(0.5)
    for t in senders:
        t.start()
    killed = False
    try:
        time.sleep(2)
        redis_kill9()
        killed = True
        wait_until(lambda: not redis_ping(0.3), 10, "redis dead")
        time.sleep(1.5)                      # sends go on without a broker
        redis("start")
        killed = False
        wait_until(redis_ping, 30, "redis back")
        time.sleep(2)
    finally:
        stop_sending.set()
        for t in senders:
            t.join(30)
        if killed:
            redis("start", check=False)
    # Everything acknowledged arrives: wait (bounded) for the readers.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(set(g) < set(ack) or len(g) < len(ack)
                                              for g, ack in zip(got, acked)):
        time.sleep(0.2)
    stop_reading.set()
    for t in readers:
        t.join(30)
    for snd, rcv in pairs:
        snd.close()
        rcv.close()
    assert not failures, failures
    repeat_counts = []
    for i, (g, ack) in enumerate(zip(got, acked)):
        assert len(ack) > 20, f"sender {i} acknowledged only {len(ack)} messages"
        seen, repeats, unexplained = set(), 0, []
        for mid, start in zip(g, after[i]):
            if mid in seen:
                repeats += 1
                if start is None or id_key(mid) <= id_key(start):
                    unexplained.append((mid, start))
            seen.add(mid)
        assert not unexplained, (f"receiver {i}: {len(unexplained)} repeats not newer than the id their "
                                 f"resume started after, e.g. {unexplained[:3]}")
        repeat_counts.append(repeats)
        missing = set(ack) - set(g)
        assert not missing, f"receiver {i} missed {len(missing)} of {len(ack)} acknowledged messages"
        assert set(g) == set(ack), f"receiver {i} got messages nobody sent it"
    assert all(r >= 1 for r in reconnects), f"a stream outlived the broker outage: {reconnects}"
    print(f"acknowledged {[len(a) for a in acked]}, reconnects {reconnects}, resets {resets}, "
          f"repeats after a resume {repeat_counts}")


def test_redis_outage_ends_streams_then_live_again(pair_of_instances):
    """Runs last: it stops and restarts Redis."""
    a, b = pair_of_instances
    alice, bob = Account(a), Account(b)
    received = []          # message ids, every segment, in order
    trace = []             # (segment, content) of each, for the failure messages
    labels = {}
    segments = 0
    s = alice.stream(a)
    m0, raw0 = bob.send(b, alice, "before the outage")
    assert_event_is(s.next_message(), m0, raw0)
    segments = 1
    sent = [m0["message_id"]]
    labels[m0["message_id"]] = m0["content"]

    def got(mid):
        received.append(mid)
        trace.append((segments, labels.get(mid, mid)))

    got(m0["message_id"])
    stopped = False
    try:
        redis("stop")
        stopped = True
        wait_until(lambda: not redis_ping(0.3), 30, "redis stopped")
        during, _ = bob.send(b, alice, "during the outage")  # committed; cannot be published
        sent.append(during["message_id"])
        labels[during["message_id"]] = during["content"]
        assert a.alive and b.alive
        redis("start")
        stopped = False
        wait_until(redis_ping, 30, "redis back")

        # The open stream must end (at the outage or once the broker is back).
        def drain_until_eof(stream, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    blk = stream.next(max(0.01, deadline - time.monotonic()))
                except AssertionError:
                    return False
                if blk is EOF:
                    return True
                if not blk.is_heartbeat:
                    assert blk.event == "message", blk
                    got(blk.id)
            return False

        assert drain_until_eof(s, 45), \
            "a stream stayed open across a broker outage (it cannot know what it missed)"
        s.close()

        # Reconnect like a client: resume from the last id, again after every
        # end, and send probes until one arrives live on the current stream.
        deadline = time.monotonic() + 60
        live_ok = False
        while not live_ok:
            assert time.monotonic() < deadline, "live delivery across instances did not come back in 60 s"
            s = alice.stream(a, last_event_id=received[-1])
            segments += 1
            probe_sent = False
            while True:
                try:
                    blk = s.next_nonheartbeat(1.5)
                except AssertionError:   # quiet: the replay is done
                    if probe_sent:
                        break            # the probe did not come live; maybe later
                    p, _ = bob.send(b, alice, f"probe {len(sent)}")
                    sent.append(p["message_id"])
                    labels[p["message_id"]] = p["content"]
                    probe_sent = p["message_id"]
                    continue
                if blk is EOF:
                    break
                assert blk.event == "message", blk
                got(blk.id)
                if probe_sent and blk.id == probe_sent:
                    live_ok = True
                    break
            s.close()
        # Everything sent arrived exactly once, in order, across the segments
        # (probes that were not delivered live came with a later resume; the
        # last one was live).
        # A probe sent on the last failed segment may still be pending: take
        # one more resume to collect everything.
        s = alice.stream(b, last_event_id=received[-1])
        segments += 1
        final, raw = bob.send(a, alice, "final")
        sent.append(final["message_id"])
        labels[final["message_id"]] = "final"
        while received[-1] != final["message_id"]:
            blk = s.next_message()
            got(blk.id)
        s.close()
        assert len(received) == len(set(received)), \
            f"a message arrived twice; (connection, message) in order of arrival: {trace}"
        assert received == sent, f"sent {[labels[x] for x in sent]}\nreceived {trace}"
    finally:
        if stopped:
            redis("start", check=False)
        alice.close()
        bob.close()
