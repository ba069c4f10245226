"""The adversarial suite's fixtures.

The server harness is tests/http/conftest.py (see harness.py, which loads it
under its own module name): its fixtures and hooks are imported here, so
pytest registers them for this directory as if they were defined here.
"""
import shutil
import tempfile
from pathlib import Path

import pytest

import harness
from harness import AUTH_ARGS, WEB_DIR, SSEStream, ServerProcess, make_account, sanitizer_report

H = harness.H

# The harness's fixtures (module-scoped temp dir, auth_server, new_account,
# server_factory, lib) and its hooks (server logs attached to failing
# tests, test keyspaces dropped at the end).
_module_tmp = H._module_tmp
auth_server = H.auth_server
new_account = H.new_account
server_factory = H.server_factory
lib = H.lib
pytest_runtest_setup = H.pytest_runtest_setup
pytest_runtest_makereport = H.pytest_runtest_makereport
pytest_sessionfinish = H.pytest_sessionfinish

# Flags every server of this suite gets: auth on (by the harness), fast
# password hashing, a 1 s heartbeat, the web client's files wherever pytest
# runs from.
SEC_ARGS = AUTH_ARGS + ("--web-dir", str(WEB_DIR))


@pytest.fixture(scope="module")
def start_server(_module_tmp):
    """start_server(name, args=(), env=None) -> a running auth-on server on a
    store of its own (under the module's temp dir), with SEC_ARGS plus args.
    Each is stopped at the end of the module and must exit 0 then."""
    started = []

    def start(name, args=(), env=None):
        d = _module_tmp / name
        d.mkdir()
        srv = ServerProcess(d, log_dir=_module_tmp, args=SEC_ARGS + tuple(args), env=env,
                            auth=True).start()
        started.append(srv)
        return srv

    yield start
    problems = []
    for srv in started:
        rep = sanitizer_report(srv)
        rc = srv.stop()
        if rep or rc != 0:
            problems.append(f"server on port {srv.port}: exit {rc!r}\n{rep or srv.log_text()}")
    assert not problems, "\n\n".join(problems)


@pytest.fixture
def accounts():
    """accounts(server, n=1) -> a list of n fresh logged-in Accounts on
    server; their clients are closed after the test."""
    made = []

    def make(server, n=1):
        out = [make_account(server) for _ in range(n)]
        made.extend(out)
        return out

    yield make
    for a in made:
        a.close()


@pytest.fixture
def streams():
    """streams(server, token=..., ...) -> an SSEStream; closed after the test."""
    made = []

    def open_(*a, **kw):
        s = SSEStream(*a, **kw)
        made.append(s)
        return s

    yield open_
    for s in made:
        s.close()


_REPORTED = set()


@pytest.fixture(autouse=True)
def _no_sanitizer_reports():
    """After every test: no running server of this session has a sanitizer
    or assertion report in its log (a crash is also caught by the fixture
    that stops the server, through its exit code)."""
    yield
    bad = []
    for srv in list(H._ALL_SERVERS):
        if srv.proc is None or id(srv) in _REPORTED:
            continue
        rep = sanitizer_report(srv)
        if rep:
            _REPORTED.add(id(srv))
            bad.append(f"server on port {srv.port} ({srv.data_dir}):\n{rep}")
    assert not bad, "sanitizer report:\n" + "\n\n".join(bad)
