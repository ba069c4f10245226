"""What the server writes to its log (issue 15, "Health, logs, signals"):
 - with --log-format json every line is one JSON object (time, level,
   layer, request_id when the event is about a request, msg), whatever
   bytes a client put in a path or a header;
 - in the text format a client cannot forge a line: control characters in
   a logged path are written as \\xNN;
 - no password, bearer token or Authorization header value appears in the
   log at any level (debug included), in either format, through
   registration, login, failed logins, authenticated calls, a stream and
   logout."""
import json
import uuid

import pytest

from support.factories import make_account
from support.server import AUTH_ARGS
from support.sse import SSEStream

HOSTILE_PATHS = ["/api/users/%22%0a%01bad%0a2026-01-01T00:00:00.000Z%20ERROR%20forged",
                 "/api/users/%7B%22x%22:1%7D", "/%e2%80%a8%ff%fe"]


def exercise(srv):
    """Traffic that touches every secret: returns the secrets used."""
    a = make_account(srv)
    b = make_account(srv)
    secrets = [a.password, b.password, a.token, b.token]
    c = srv.client()
    wrong = "Wrong-" + uuid.uuid4().hex
    secrets.append(wrong)
    st, _, _ = c.call("POST", "/api/auth/login", {"username": a.username, "password": wrong})
    assert st == 401
    bogus = "bogus-" + uuid.uuid4().hex
    secrets.append(bogus)
    st, _, _ = c.call("GET", "/api/auth/me", headers={"Authorization": f"Bearer {bogus}"})
    assert st == 401
    for p in HOSTILE_PATHS:
        c.call("GET", p, headers={"X-Request-Id": 'evil"\\id'})
    c.close()
    st, m, _ = a.client.call("POST", "/api/messages/", {"receiver_id": b.user_id, "content": "secret-free"})
    assert st == 201, (st, m)
    s = SSEStream(srv, b.token).open()
    s.close()
    st, _, _ = a.client.call("POST", "/api/auth/logout", {})
    assert st in (200, 204), st
    a.close()
    b.close()
    return secrets


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_are_whole_and_hold_no_secret(server_factory, tmp_path, fmt):
    srv = server_factory.start(tmp_path / "data", args=AUTH_ARGS + ("--log-level", "debug", "--log-format", fmt),
                               auth=True)
    secrets = exercise(srv)
    srv.stop_and_check()
    log = srv.log_text(limit=None)
    lines = log.splitlines()
    assert len(lines) > 20, log
    for s in secrets:
        assert s not in log, f"a secret ({s[:6]}...) is in the {fmt} log"
    if fmt == "json":
        ids = 0
        for line in lines:
            obj = json.loads(line)   # every line, whole
            assert {"time", "level", "layer", "msg"} <= set(obj), obj
            assert obj["level"] in ("debug", "info", "warn", "error"), obj
            ids += "request_id" in obj
        assert ids > 10, "request ids were not lifted into their field"
    else:
        forged = [line for line in lines if "forged" in line]
        assert len(forged) == 1 and "\\x0a" in forged[0], forged
        assert not any(line.startswith("2026-01-01T00:00:00.000Z") for line in lines)
