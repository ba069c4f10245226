"""Black-box HTTP tests of the messenger server.

The harness is tests/support (see its __init__.py): the real binary
($MESSENGER_BIN) on a free localhost port with a fresh temporary store
(LMDB, or a keyspace of its own with MESSENGER_TEST_STORE=cassandra),
keep-alive JSON clients, users and messages made through the API. The
fixtures (server, seeded_server, client, seeded_client, auth_server,
new_account, server_factory, lib) and hooks (the server logs of failing
tests, the test keyspaces dropped at the end) are support.fixtures'.

Every server starts with MESSENGER_AUTH=off unless asked for auth (the open,
FastAPI-compatible API the older tests were written for); ``auth=True``
starts it with MESSENGER_AUTH=on, ``auth=None`` leaves the server's default.

Only pytest and the standard library are used.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.fixtures import (_module_tmp, accounts, auth_server, client, lib, new_account,  # noqa: E402,F401
                              pytest_runtest_makereport, pytest_runtest_setup,
                              pytest_sessionfinish, seeded_client, seeded_server, server,
                              server_factory)
