"""The fixtures and hooks the suites share. A suite's conftest.py imports
the ones it uses by name (pytest registers what a conftest's namespace
holds, imported or not).

Fixtures
    lib             helper functions (conversation id derivation, format
                    checks, page walks, store snapshots, ...) as attributes
    _module_tmp     a temporary directory per test module (its keyspaces
                    are dropped with it)
    server          module-scoped server on an empty store
    seeded_server   module-scoped server on a store written by `messenger seed`
    client          a Client bound to ``server``
    seeded_client   a Client bound to ``seeded_server``
    auth_server     module-scoped server with accounts and access control on
                    (fast password hashing, 1 s SSE heartbeat)
    accounts        registers + logs in fresh users on a given server
    new_account     registers + logs in a fresh user on ``auth_server``:
                    an Account with .user_id .username .password .token .client
    server_factory  start/stop servers on a given directory (restart tests)
    streams         (made by streams_fixture) open SSE streams, closed
                    after the test

Hooks
    pytest_runtest_setup, pytest_runtest_makereport
                    the logs of the servers a failing test used go with its
                    report
    pytest_sessionfinish
                    the test keyspaces that are left are dropped
"""
import shutil
import tempfile
import types
from pathlib import Path

import pytest

from . import checks, factories, store
from .client import AuthClient, Client, query, snapshot, walk_conversations, walk_messages
from .env import CASSANDRA, MESSENGER_BIN
from .sse import SSEStream
from .server import (AUTH_ARGS, FAST_ARGON2, SHUTDOWN_TIMEOUT, ServerFactory, ServerProcess, new_test,
                     run_seed, server_env, servers_of_this_test)

# What the `lib` fixture offers, each under its own name.
_LIB_NAMES = (
    checks.derive_conversation_id, checks.is_canonical_uuid, checks.check_uuid, checks.check_time,
    checks.parse_time, checks.timeuuid_key, checks.check_error, checks.check_page_shape,
    checks.check_message, walk_messages, walk_conversations, snapshot, query, run_seed, Client,
    AuthClient, ServerProcess, factories.new_username, factories.new_password, factories.register,
    factories.login, factories.make_account, server_env,
)
LIB = types.SimpleNamespace(
    **{f.__name__: f for f in _LIB_NAMES},
    new_account=factories.make_account,
    FAST_ARGON2=FAST_ARGON2,
    AUTH_ARGS=AUTH_ARGS,
    CASSANDRA=CASSANDRA,
    SHUTDOWN_TIMEOUT=SHUTDOWN_TIMEOUT,
    MESSENGER_BIN=MESSENGER_BIN,
)


@pytest.fixture(scope="session")
def lib():
    return LIB


@pytest.fixture(scope="module")
def _module_tmp():
    d = tempfile.mkdtemp(prefix="messenger-http-")
    yield Path(d)
    store.drop_keyspaces_under(d)
    shutil.rmtree(d, ignore_errors=True)


def _module_server(tmp, name, seed=False, **kw):
    """A server on the store tmp/name, stopped (it must exit 0) by the caller."""
    data_dir = tmp / name
    data_dir.mkdir()
    if seed:
        run_seed(data_dir)
    return ServerProcess(data_dir, log_dir=tmp, **kw).start()


@pytest.fixture(scope="module")
def server(_module_tmp):
    srv = _module_server(_module_tmp, "data")
    yield srv
    srv.stop_and_check()


@pytest.fixture(scope="module")
def seeded_server(_module_tmp):
    srv = _module_server(_module_tmp, "seeded", seed=True)
    yield srv
    srv.stop_and_check()


@pytest.fixture(scope="module")
def client(server):
    c = server.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def seeded_client(seeded_server):
    c = seeded_server.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def auth_server(_module_tmp):
    """Accounts and access control on; fast hashing; 1 s SSE heartbeat."""
    srv = _module_server(_module_tmp, "auth", args=AUTH_ARGS, auth=True)
    yield srv
    srv.stop_and_check()


@pytest.fixture
def accounts():
    """accounts(server, n=1, username=None, password=None) -> a list of n
    fresh logged-in Accounts on server; their clients are closed after the
    test."""
    made = []

    def make(server, n=1, username=None, password=None):
        out = [factories.make_account(server, username, password) for _ in range(n)]
        made.extend(out)
        return out

    yield make
    for a in made:
        a.close()


@pytest.fixture
def new_account(auth_server, accounts):
    """new_account(username=None, password=None) -> a logged-in Account on
    auth_server; its client is closed after the test."""

    def make(username=None, password=None):
        return accounts(auth_server, username=username, password=password)[0]

    return make


@pytest.fixture
def server_factory():
    tmp = tempfile.mkdtemp(prefix="messenger-http-factory-")
    factory = ServerFactory(tmp)
    yield factory
    bad = factory.cleanup()
    store.drop_keyspaces_under(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    assert not bad, f"servers did not shut down cleanly: {[(s.where, rc) for s, rc in bad]}"


def streams_fixture(**defaults):
    """A `streams` fixture: streams(target, ...) -> an SSEStream (see
    sse.SSEStream; defaults are the suite's own keyword arguments), and
    every stream it opened is closed after the test."""

    @pytest.fixture(name="streams")
    def streams():
        made = []

        def open_(*a, **kw):
            s = SSEStream(*a, **{**defaults, **kw})
            made.append(s)
            return s

        yield open_
        for s in made:
            s.close()

    return streams


# --------------------------------------------------------------------------
# hooks
# --------------------------------------------------------------------------

def pytest_runtest_setup(item):
    new_test()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Shows the server log of failing tests."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for srv in servers_of_this_test():
        text = srv.log_text()
        if text.strip():
            rep.sections.append((f"messenger log (port {srv.port}, {srv.where})", text))


def pytest_sessionfinish(session, exitstatus):
    """Drops the keyspaces that are left (before the driver's own exit hook
    shuts its connections down)."""
    store.close()
