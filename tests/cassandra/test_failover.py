"""Client failures: Cassandra stopped under a running server gives 503 with a
clear detail (promptly, never a hang or a crash), and the server recovers by
itself when Cassandra returns. Stops and restarts the real Cassandra, so it
runs last (file order)."""
import subprocess
import time

from support.env import REPO_ROOT
from support.store import new_keyspace

CASSANDRA_SCRIPT = str(REPO_ROOT / "scripts" / "cassandra")


def cassandra(cmd):
    proc = subprocess.run([CASSANDRA_SCRIPT, cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, f"scripts/cassandra {cmd}: {proc.stdout.decode()[-3000:]}"


def timed(c, method, path, body=None):
    t0 = time.monotonic()
    st, b, _ = c.call(method, path, body)
    return st, b, time.monotonic() - t0


def test_cassandra_down_gives_503_and_server_recovers(start_server):
    srv = start_server(new_keyspace("fo"), extra=["--cassandra-timeout-ms", "2000"])
    c = srv.client()
    _, a, _ = c.call("POST", "/api/users", {"username": "alice"})
    _, b, _ = c.call("POST", "/api/users", {"username": "bob"})
    st, m1, _ = c.call("POST", "/api/messages/", {"sender_id": a["user_id"], "receiver_id": b["user_id"], "content": "before"})
    assert st == 201
    cid = m1["conversation_id"]

    cassandra("stop")
    try:
        for method, path, body in [
            ("GET", "/health", None),
            ("POST", "/api/messages/", {"sender_id": a["user_id"], "receiver_id": b["user_id"], "content": "lost?"}),
            ("GET", f"/api/messages/conversation/{cid}", None),
            ("GET", f"/api/conversations/user/{a['user_id']}", None),
            ("GET", f"/api/users/{a['user_id']}", None),
        ]:
            st, body_, took = timed(c, method, path, body)
            assert st == 503, (method, path, st, body_)
            assert isinstance(body_.get("detail"), str) and body_["detail"], body_
            assert took < 10, f"{method} {path} took {took:.1f}s with Cassandra down"
        assert srv.proc.poll() is None, "the server died with Cassandra down"
    finally:
        cassandra("start")

    # Back without restarting our server: it reconnects by itself.
    deadline = time.monotonic() + 120
    while True:
        st, _, _ = c.call("GET", "/health")
        if st == 200:
            break
        assert time.monotonic() < deadline, f"no recovery within 120 s:\n{srv.log_text()}"
        time.sleep(0.5)
    st, m2, _ = c.call("POST", "/api/messages/", {"sender_id": b["user_id"], "receiver_id": a["user_id"], "content": "after"})
    assert st == 201, m2
    st, page, _ = c.call("GET", f"/api/messages/conversation/{cid}")
    assert st == 200
    contents = [m["content"] for m in page["data"]]
    assert contents[0] == "after" and "before" in contents
    # The send attempted while Cassandra was down was answered 503: it must
    # not have been half-written (a 503 promises nothing, but the batch is
    # all-or-nothing).
    assert contents.count("lost?") in (0, 1)
    c.close()
