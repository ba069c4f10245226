"""Fixtures for the Cassandra-only tests: a real Cassandra on 127.0.0.1:9042
(started by scripts/cassandra, see scripts/test.sh), the messenger binary
($MESSENGER_BIN) on a keyspace of its own, and the DataStax Python driver.

The harness is tests/support (see its __init__.py). This suite is on the
Cassandra store whatever the caller says: MESSENGER_TEST_STORE is set to
cassandra before support is imported, so its waits are Cassandra's.

Servers start with MESSENGER_AUTH=off (the open API these tests were written
for) unless started with auth=True. They log at info level (the failure
messages carry the log) and have 30 s to stop."""
import os
import sys
from pathlib import Path

import pytest

os.environ["MESSENGER_TEST_STORE"] = "cassandra"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.fixtures import (pytest_runtest_makereport, pytest_runtest_setup,  # noqa: E402,F401
                              pytest_sessionfinish)
from support.server import ServerProcess  # noqa: E402
from support.store import drop_keyspaces  # noqa: E402


@pytest.fixture
def start_server(tmp_path):
    """start_server(keyspace, extra=(), auth=False, env=None) -> a running
    server on keyspace; stopped after the test (it must exit 0), and the
    keyspace dropped."""
    servers = []

    def start(keyspace, extra=(), auth=False, env=None):
        s = ServerProcess(keyspace=keyspace, log_dir=tmp_path, args=extra, auth=auth, env=env,
                          log_level="info", shutdown_timeout=30.0).start()
        servers.append(s)
        return s

    yield start
    codes = [(s, s.stop()) for s in servers]
    drop_keyspaces({s.keyspace for s in servers})
    for s, code in codes:
        assert code == 0, f"server exit code {code}:\n{s.log_text()}"


@pytest.fixture
def driver():
    """A DataStax driver session (no keyspace), one per test: a session whose
    keyspace a test set (test_compat) and dropped cannot come back after a
    Cassandra restart (test_failover), and would fail every later test that
    shared it (NoHostAvailable)."""
    from cassandra.cluster import Cluster
    cluster = Cluster(["127.0.0.1"], port=9042)
    session = cluster.connect()
    yield session
    cluster.shutdown()
