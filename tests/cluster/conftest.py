"""Fixtures for the cluster test: a local 3-node Cassandra cluster on
127.0.0.2, 127.0.0.3 and 127.0.0.4 (scripts/cassandra cluster start 3; `make
test-cluster` starts it, runs this suite and stops it), and the messenger
binary ($MESSENGER_BIN) on a keyspace of its own with RF=3 at QUORUM.

The harness is tests/support (see its __init__.py). This suite is on the
Cassandra store whatever the caller says. It never uses the single
development node on 127.0.0.1: its keyspace is dropped through the cluster."""
import os
import sys
from pathlib import Path

os.environ["MESSENGER_TEST_STORE"] = "cassandra"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.fixtures import pytest_runtest_makereport, pytest_runtest_setup  # noqa: E402,F401
