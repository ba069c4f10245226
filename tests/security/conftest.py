"""The adversarial suite's fixtures.

The harness is tests/support (see its __init__.py): the shared fixtures and
hooks are imported here from support.fixtures, so pytest registers them for
this directory as if they were defined here.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.env import WAIT, WEB_DIR  # noqa: E402
from support.fixtures import (_module_tmp, accounts, auth_server, lib, new_account,  # noqa: E402,F401
                              pytest_runtest_makereport, pytest_runtest_setup,
                              pytest_sessionfinish, server_factory, streams_fixture)
from support.server import AUTH_ARGS, ServerProcess, running_servers, sanitizer_report  # noqa: E402

# Flags every server of this suite gets: auth on (by the harness), fast
# password hashing, a 1 s heartbeat, the web client's files wherever pytest
# runs from.
SEC_ARGS = AUTH_ARGS + ("--web-dir", str(WEB_DIR))

# streams(server, token=..., ...) -> an SSEStream; closed after the test.
# Its waits are bounded by this suite's WAIT, and open() is content with
# any `retry:` preamble (the exact one is tests/http's business).
streams = streams_fixture(wait=WAIT, strict_preamble=False)


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


_REPORTED = set()


@pytest.fixture(autouse=True)
def _no_sanitizer_reports():
    """After every test: no running server of this session has a sanitizer
    or assertion report in its log (a crash is also caught by the fixture
    that stops the server, through its exit code)."""
    yield
    bad = []
    for srv in running_servers():
        if id(srv) in _REPORTED:
            continue
        rep = sanitizer_report(srv)
        if rep:
            _REPORTED.add(id(srv))
            bad.append(f"server on port {srv.port} ({srv.where}):\n{rep}")
    assert not bad, "sanitizer report:\n" + "\n\n".join(bad)
