"""Sessions end everywhere.

Threat: a token that was revoked (logout) or has expired keeps reading
through an event stream opened while it was valid (issue 12, finding 2).
An open GET /api/events stream must end within a second of its token's
logout or expiry, a reconnect with that token is 401, and no message sent
after the logout reaches the logged-out stream; the user's other sessions
are not affected.
"""
import time

import pytest

from support.checks import now_ms, parse_time
from support.factories import login, make_account, send
from support.server import assert_alive
from support.sse import EOF, message_ids

END_WITHIN = 1.0       # the contract: a stream ends within 1 s
SLACK = 0.5            # scheduling on a shared 2-core machine


def assert_401(status, body, headers, what):
    assert status == 401, (what, status, body)
    assert isinstance(body, dict) and isinstance(body.get("detail"), str), (what, body)
    assert (headers.get("www-authenticate") or "").split()[:1] == ["Bearer"], (what, headers)


def assert_events_refused(server, streams, token, what):
    s = streams(server, token=token)
    st = s.wait_status()
    assert st == 401, (what, "GET /api/events with the token", st, s.body[:300])
    assert (s.headers.get("www-authenticate") or "").split()[:1] == ["Bearer"], (what, s.headers)


def logout(server, token):
    c = server.client(token=token)
    try:
        status, body, _ = c.call("POST", "/api/auth/logout")
    finally:
        c.close()
    assert status == 204, ("logout", status, body)


def test_logout_ends_the_open_stream_within_a_second(auth_server, new_account, streams):
    a = new_account()
    s = streams(auth_server, token=a.token).open()
    logout(auth_server, a.token)
    t0 = time.monotonic()
    ended = s.wait_eof(END_WITHIN + SLACK)
    assert ended, f"the stream of a logged-out token is still open {END_WITHIN + SLACK} s after the logout"
    assert s.eof_at - t0 <= END_WITHIN + SLACK, s.eof_at - t0
    status, body, headers = a.client.call("GET", "/api/auth/me")
    assert_401(status, body, headers, "GET /api/auth/me after logout")
    assert_events_refused(auth_server, streams, a.token, "after logout")


def test_messages_after_logout_never_reach_the_logged_out_stream(auth_server, new_account, streams):
    a, b = new_account(), new_account()
    # a second session of the same user, which the logout must not touch
    c = auth_server.client()
    other_token = login(c, a.username, a.password)["access_token"]
    c.close()
    doomed = streams(auth_server, token=a.token).open()
    kept = streams(auth_server, token=other_token).open()
    before = send(b, a, "before the logout")
    assert doomed.next_nonheartbeat().id == before["message_id"]
    assert kept.next_nonheartbeat().id == before["message_id"]
    logout(auth_server, a.token)
    after = [send(b, a, f"after the logout {i}")["message_id"] for i in range(5)]
    ended = doomed.wait_eof(END_WITHIN + SLACK)
    leaked = [i for i in message_ids(doomed.drained) if i in after]
    assert not leaked, f"{len(leaked)} message(s) sent after the logout reached its stream"
    assert ended, "the logged-out stream did not end"
    # the other session's stream is open and got every one of them
    got = []
    for _ in after:
        blk = kept.next_nonheartbeat()
        assert blk is not EOF, "the user's other session's stream ended at the logout"
        got.append(blk.id)
    assert got == after, (got, after)
    assert not kept.ended


def test_logout_ends_every_stream_of_that_token(auth_server, new_account, streams):
    a = new_account()
    several = [streams(auth_server, token=a.token).open() for _ in range(3)]
    logout(auth_server, a.token)
    t0 = time.monotonic()
    for i, s in enumerate(several):
        assert s.wait_eof(max(0.05, t0 + END_WITHIN + SLACK - time.monotonic())), \
            f"stream {i + 1} of 3 of the logged-out token is still open"


@pytest.fixture(scope="module")
def ttl_server(start_server):
    return start_server("ttl", args=("--token-ttl", "2"))


def test_expiry_ends_the_open_stream(ttl_server, streams):
    acct = make_account(ttl_server)
    try:
        exp_ms = parse_time(acct.login["expires_at"])
        s = streams(ttl_server, token=acct.token).open()
        assert now_ms() < exp_ms, "the stream opened after its token had expired"
        left = (exp_ms - now_ms()) / 1000.0
        ended = s.wait_eof(left + END_WITHIN + SLACK)
        end_ms = now_ms() - round((time.monotonic() - s.eof_at) * 1000) if s.eof_at else None
        assert ended, (f"the stream is still open {END_WITHIN + SLACK} s after its token expired "
                       f"(expires_at {acct.login['expires_at']})")
        assert end_ms <= exp_ms + (END_WITHIN + SLACK) * 1000, (end_ms - exp_ms, "ms after expiry")
        status, body, headers = acct.client.call("GET", "/api/auth/me")
        assert_401(status, body, headers, "GET /api/auth/me after expiry")
        assert_events_refused(ttl_server, streams, acct.token, "after expiry")
    finally:
        acct.close()
    assert_alive(ttl_server)


def test_a_stream_opened_just_before_expiry_ends_too(ttl_server, streams):
    """Opened in the token's last second: the close is not only decided when
    the stream opens."""
    acct = make_account(ttl_server)
    try:
        exp_ms = parse_time(acct.login["expires_at"])
        wait = (exp_ms - now_ms() - 700) / 1000.0
        if wait > 0:
            time.sleep(wait)  # a point in time, not a condition: nothing to poll
        s = streams(ttl_server, token=acct.token)
        st = s.wait_status()
        if st == 401:
            return  # it expired on the way: refused, which is right too
        assert st == 200, (st, s.body[:300])
        assert s.wait_eof((exp_ms - now_ms()) / 1000.0 + END_WITHIN + SLACK), \
            "a stream opened just before its token expired is still open after the expiry"
    finally:
        acct.close()
