"""What the environment tells every Python suite, read once.

MESSENGER_BIN           the server binary (default <repo>/build/messenger)
MESSENGER_TEST_STORE    "cassandra" runs a suite on the Cassandra store (a
                        real Cassandra on 127.0.0.1:9042, see
                        scripts/cassandra); anything else, LMDB
MESSENGER_TEST_SANITIZER, MESSENGER_TEST_DELAY, ASAN_OPTIONS, ...
                        are not read here: the servers inherit them (see
                        server.server_env), and the few tests that care read
                        them themselves

tests/cassandra sets MESSENGER_TEST_STORE=cassandra before it imports this
module: that suite is on Cassandra whatever the caller says.
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = REPO_ROOT / "web"
MESSENGER_BIN = os.environ.get("MESSENGER_BIN") or str(REPO_ROOT / "build" / "messenger")

TEST_STORE = os.environ.get("MESSENGER_TEST_STORE", "lmdb")
CASSANDRA = TEST_STORE == "cassandra"

# Longest wait for one thing that should happen soon (an answer on a raw
# socket, an event): the adversarial suite's patience. The SSE client's
# default is its own (sse.WAIT): each suite keeps the bounds it was written
# with.
WAIT = 20.0 if CASSANDRA else 10.0
