"""A full disk under the embedded (LMDB) store, on a small tmpfs mounted for
the test (needs root: skipped with the reason when mount is refused).

The store keeps MDB_WRITEMAP and reserves data.mdb's blocks before it writes
(a write-map page fault on a full disk would be SIGBUS), so a full disk is
never a crash: see src/store/lmdb/lmdb_space.c.

  1. While running: the disk is filled by another file; sends and
     registrations get 507, reads keep working, the server stays up, and
     nothing acknowledged is lost.
  2. A restart on the full disk starts READ-ONLY (it refused to start,
     "cannot write the state file"): reads served, writes 507, a warning in
     the log.
  3. Space comes back (the filler is deleted): writes work again without a
     restart, within a few seconds.
  4. After a crash (SIGKILL) everything acknowledged is there.

LMDB only: skipped when the suite runs on Cassandra.
"""
import errno
import os
import subprocess
import time
import uuid

import pytest

from support.env import CASSANDRA
from support.server import SHUTDOWN_TIMEOUT

pytestmark = pytest.mark.skipif(CASSANDRA, reason="the embedded LMDB store's disk only")

DISK_SIZE = "48m"
CONTENT = "full disk " + "x" * 4000   # near the largest message: new overflow pages in data.mdb
RESUME_TIMEOUT = 15.0                 # the store retries every second


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of DISK_SIZE, unmounted at the end (set up before, so torn
    down after, server_factory when a test names it first)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test (needs root): {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path):
    """Writes `path` (appending) until the file system says ENOSPC, in ever
    smaller pieces so that not even a page is left. Returns bytes written."""
    total = 0
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            chunk = b"\xa5" * size
            while True:
                try:
                    n = f.write(chunk)
                except OSError as e:
                    assert e.errno in (errno.ENOSPC, errno.EDQUOT), e
                    break
                total += n or 0
                if not n:
                    break
    return total


def stop(srv):
    """SIGTERM; the exit code (a clean close may fail to record itself on a
    full disk, which is logged, not fatal). Not exiting in time is."""
    rc = srv.stop()
    assert rc != "timeout", f"no exit within {SHUTDOWN_TIMEOUT}s of SIGTERM\n{srv.log_text()}"
    return rc


def send(c, a, b, content=CONTENT):
    return c.call("POST", "/api/messages/", {"sender_id": a, "receiver_id": b, "content": content})


def assert_read_only(srv, c, a, b, cid, acked):
    """Reads answer everything acknowledged; writes answer 507."""
    assert srv.alive, srv.log_text()
    stored = list(reversed(c.walk_messages(cid, limit=100)))
    assert stored == acked, f"{len(stored)} stored, {len(acked)} acknowledged"
    status, body, _ = c.call("GET", f"/api/users/{a}")
    assert status == 200, (status, body)
    status, body, _ = send(c, a, b)
    assert status == 507, (status, body)
    status, body, _ = c.call("POST", "/api/users", {"username": f"late-{uuid.uuid4().hex[:8]}"})
    assert status == 507, (status, body)
    status, body, _ = c.call("GET", "/health")
    assert status == 200, (status, body)
    assert body["status"] == "degraded" and "disk" in body["detail"], body
    status, body, _ = c.call("GET", "/health/ready")
    assert status == 503 and body["checks"]["writes"] != "ok" and "writes" in body["detail"], (status, body)
    assert body["checks"]["store"] == "ok", body


def test_full_disk_read_only_then_writes_resume(small_disk, server_factory):
    data = small_disk / "data"
    filler = small_disk / "filler"
    srv = server_factory.start(data)
    c = srv.client()
    a, b = c.create_user()["user_id"], c.create_user()["user_id"]
    acked = []
    for i in range(50):
        status, m, _ = send(c, a, b, f"before {i}")
        assert status == 201, (status, m)
        acked.append(m)
    cid = acked[0]["conversation_id"]

    # 1. the disk fills while running
    fill(filler)
    statuses = []
    for i in range(400):
        try:
            status, m, _ = send(c, a, b)
        except ConnectionError:
            code = srv.proc.wait(5)
            pytest.fail(f"the server died on a full disk (exit code {code}; -7 is SIGBUS)\n{srv.log_text()}")
        statuses.append(status)
        if status == 201:
            acked.append(m)
        else:
            assert status == 507, (i, status, m)
            break
    assert statuses[-1] == 507, f"no 507 after {len(statuses)} sends on a full disk"
    assert_read_only(srv, c, a, b, cid, acked)
    assert "READ-ONLY" in srv.log_text(limit=100000)
    c.close()

    # 2. a restart on the full disk: read-only, not refused
    stop(srv)
    fill(filler)  # whatever the stop released
    srv = server_factory.start(data)
    c = srv.client()
    assert_read_only(srv, c, a, b, cid, acked)
    log = srv.log_text(limit=100000)
    assert "READ-ONLY" in log, log

    # 3. space returns: writes resume without a restart
    os.unlink(filler)
    deadline = time.monotonic() + RESUME_TIMEOUT
    while True:
        status, m, _ = send(c, a, b, "after the disk was freed")
        if status == 201:
            acked.append(m)
            break
        assert status == 507, (status, m)
        assert time.monotonic() < deadline, f"writes did not resume within {RESUME_TIMEOUT}s:\n{srv.log_text()}"
        time.sleep(0.2)
    for i in range(20):
        status, m, _ = send(c, a, b, f"after {i}")
        assert status == 201, (status, m)
        acked.append(m)
    assert c.create_user()["user_id"]
    assert "takes writes again" in srv.log_text(limit=100000)
    status, body, _ = c.call("GET", "/health")
    assert (status, body["status"]) == (200, "ok"), body
    status, body, _ = c.call("GET", "/health/ready")
    assert (status, body["status"]) == (200, "ready"), body
    c.close()

    # 4. every acknowledged message survives a crash
    srv.kill9()
    srv = server_factory.start(data)
    c = srv.client()
    assert list(reversed(c.walk_messages(cid, limit=100))) == acked
    c.close()
    srv.stop_and_check()


def test_restart_on_a_full_disk_with_a_fresh_store_directory_left_over(small_disk, server_factory):
    """A clean stop, the disk filled while nothing runs, a start: read-only
    from the first request, and it takes writes once space returns."""
    data = small_disk / "data"
    filler = small_disk / "filler"
    srv = server_factory.start(data)
    c = srv.client()
    a, b = c.create_user()["user_id"], c.create_user()["user_id"]
    status, m, _ = send(c, a, b, "only one")
    assert status == 201, (status, m)
    c.close()
    srv.stop_and_check()
    fill(filler)
    srv = server_factory.start(data)
    c = srv.client()
    assert_read_only(srv, c, a, b, m["conversation_id"], [m])
    os.unlink(filler)
    deadline = time.monotonic() + RESUME_TIMEOUT
    while (status := send(c, a, b, "later")[0]) != 201:
        assert status == 507 and time.monotonic() < deadline, (status, srv.log_text())
        time.sleep(0.2)
    c.close()
    srv.stop_and_check()
