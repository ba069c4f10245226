"""Users and messages made through the API: names, registration and login,
a logged-in Account, and sends (one, or many at once from several
connections). Every helper asserts the answer it needs."""
import threading
import types
import uuid

from .client import walk_messages


def new_username(prefix="user"):
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def new_password():
    return "pw-" + uuid.uuid4().hex


def register(client, username=None, password=None):
    """POST /api/users with a password; asserts 201. Returns (user, password)."""
    username = username or new_username()
    password = password or new_password()
    status, body, _ = client.call("POST", "/api/users", {"username": username, "password": password})
    assert status == 201, ("registration failed", status, body)
    return body, password


def login(client, username, password):
    """POST /api/auth/login; asserts 200 and returns the body."""
    status, body, _ = client.call("POST", "/api/auth/login", {"username": username, "password": password})
    assert status == 200, ("login failed", status, body)
    return body


class Account(types.SimpleNamespace):
    """A registered, logged-in user: user_id, username, password, token,
    login (the login answer) and client (an AuthClient with the token)."""

    def close(self):
        self.client.close()


def make_account(server, username=None, password=None):
    """Registers a fresh user on server, logs in, returns an Account."""
    c = server.client()
    try:
        user, password = register(c, username, password)
        body = login(c, user["username"], password)
    finally:
        c.close()
    return Account(user_id=user["user_id"], username=user["username"], password=password,
                   token=body["access_token"], login=body,
                   client=server.client(token=body["access_token"]))


def send(acct, receiver, content, **extra):
    """acct sends content to receiver (an Account or a user id); asserts 201."""
    to = receiver if isinstance(receiver, str) else receiver.user_id
    body = {"receiver_id": to, "content": content}
    body.update(extra)
    status, m, _ = acct.client.call("POST", "/api/messages/", body)
    assert status == 201, ("send", status, m)
    return m


def messages_of(acct, cid, limit=100):
    """Every message of a conversation as acct reads it, newest first."""
    return walk_messages(acct.client, cid, limit=limit)


def send_many(server, acct, to, n, content=None, threads=4):
    """n sends from acct to the Account to, over `threads` connections of
    their own (content, or "bulk <i>" for the i-th); returns the messages
    in the order they were acknowledged."""
    out, errors = [], []
    lock = threading.Lock()

    def work(k):
        cl = server.client(token=acct.token)
        try:
            for i in range(k, n, threads):
                m = cl.send(acct.user_id, to.user_id, f"bulk {i}" if content is None else content)
                with lock:
                    out.append(m)
        except BaseException as e:  # reported below, in the caller's thread
            errors.append(e)
        finally:
            cl.close()

    ts = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(180)
    assert not errors, f"send failed: {errors[0]!r}"
    assert len(out) == n
    return out
