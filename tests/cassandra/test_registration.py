"""Registration on Cassandra when a write fails half-way (issue 14,
"atomicity you can rely on"): the name must not stay reserved for a user
that does not exist, or nobody could ever take it again (its reservation is
a lightweight transaction, IF NOT EXISTS). The fault is real: the users
table is dropped under the running server, so the users-row write fails,
then created again."""
from support.factories import login, new_password, new_username
from support.server import AUTH_ARGS
from support.store import new_keyspace

USERS_DDL = "CREATE TABLE {ks}.users (user_id uuid PRIMARY KEY, username text)"


def test_a_registration_that_failed_half_way_leaves_the_name_free(start_server, driver):
    ks = new_keyspace()
    srv = start_server(ks, extra=AUTH_ARGS, auth=True)
    c = srv.client()
    # A first registration: every statement is prepared and works.
    st, body, _ = c.call("POST", "/api/users", {"username": new_username(), "password": new_password()})
    assert st == 201, body
    name, password = new_username("half"), new_password()
    driver.execute(f"DROP TABLE {ks}.users")
    try:
        st, body, _ = c.call("POST", "/api/users", {"username": name, "password": password})
        assert st == 503, (st, body)  # the store failed: never a 201, never a 500
        assert set(body) == {"detail"}, body
    finally:
        driver.execute(USERS_DDL.format(ks=ks))
    # The name is free: the next registration of it completes, and logs in.
    st, user, _ = c.call("POST", "/api/users", {"username": name, "password": password})
    assert st == 201, ("the failed registration kept the name", st, user)
    session = login(c, name, password)
    assert session["user"]["user_id"] == user["user_id"], session
    # A taken name is still a 409, and the loser's rows are gone again: the
    # name finds the winner, and only the winner can log in.
    st, body, _ = c.call("POST", "/api/users", {"username": name.upper(), "password": new_password()})
    assert st == 409, body
    rows = list(driver.execute(f"SELECT user_id, username FROM {ks}.users"))
    assert [r.username for r in rows].count(name) == 1 and not [r for r in rows if r.username == name.upper()], rows
    me = srv.client(token=session["access_token"])
    st, found, _ = me.call("GET", f"/api/users?username={name}")
    assert st == 200 and found["user_id"] == user["user_id"], found
    me.close()
    c.close()
