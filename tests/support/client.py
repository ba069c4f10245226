"""A keep-alive JSON client over http.client, and reads that walk the API
(every page of a conversation or of a user's list, a snapshot of everything
reachable from some users)."""
import http.client
import json
import uuid
from urllib.parse import urlencode

from .checks import check_page_shape


class Client:
    """A keep-alive JSON client. call() returns (status, json_or_None, headers).

    headers is a dict with lowercase names. The raw bytes of the last
    response body are in .last_raw. When retry is true, a request that fails
    because the server closed an idle keep-alive connection is sent once
    more on a fresh connection (only when the connection had been used).
    """

    def __init__(self, host, port, retry=True, timeout=30):
        self.host, self.port, self.retry, self.timeout = host, port, retry, timeout
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.last_raw = b""
        self.connects = 0

    def close(self):
        self.conn.close()

    def call(self, method, path, body=None, raw=None, headers=None):
        if raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        else:
            data = None
        hdrs = {}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        for attempt in (0, 1):
            reused = self.conn.sock is not None
            try:
                if not reused:
                    self.connects += 1
                self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (ConnectionError, http.client.BadStatusLine,
                    http.client.IncompleteRead):
                self.conn.close()
                if attempt or not reused or not self.retry:
                    raise
        self.last_raw = payload
        resp_headers = {k.lower(): v for k, v in resp.getheaders()}
        parsed = None
        if payload:
            try:
                parsed = json.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                parsed = None
        return resp.status, parsed, resp_headers

    # ---- convenience wrappers (assert success) ----

    def create_user(self, name=None):
        name = name or f"user-{uuid.uuid4().hex[:16]}"
        status, body, _ = self.call("POST", "/api/users", {"username": name})
        assert status == 201, (status, body)
        return body

    def send(self, sender_id, receiver_id, content, path="/api/messages/", **extra):
        payload = {"sender_id": sender_id, "receiver_id": receiver_id, "content": content}
        payload.update(extra)
        status, body, _ = self.call("POST", path, payload)
        assert status == 201, (status, body)
        return body

    def messages_page(self, cid, **params):
        status, body, _ = self.call("GET", f"/api/messages/conversation/{cid}{query(params)}")
        assert status == 200, (status, body)
        return body

    def conversations_page(self, uid, **params):
        status, body, _ = self.call("GET", f"/api/conversations/user/{uid}{query(params)}")
        assert status == 200, (status, body)
        return body

    def walk_messages(self, cid, limit=100):
        """All messages of a conversation, newest first, via before_message_id."""
        return walk_messages(self, cid, limit)

    def walk_conversations(self, uid, limit=100):
        return walk_conversations(self, uid, limit)


class AuthClient(Client):
    """A Client that sends `Authorization: Bearer <token>` with every request
    (a headers argument can override it). token may be changed at any time."""

    def __init__(self, host, port, token, retry=True, timeout=30):
        super().__init__(host, port, retry=retry, timeout=timeout)
        self.token = token

    def call(self, method, path, body=None, raw=None, headers=None):
        hdrs = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if headers:
            hdrs.update(headers)
        return super().call(method, path, body=body, raw=raw, headers=hdrs)


def query(params):
    params = {k: v for k, v in params.items() if v is not None}
    if not params:
        return ""
    return "?" + urlencode(params)


def _walk(next_page, limit, max_pages, check_cursor):
    """Every item of a cursor-paged list: next_page(cursor) answers a page."""
    out, cursor = [], None
    for _ in range(max_pages):
        page = next_page(cursor)
        check_page_shape(page, limit)
        out.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        check_cursor(cursor, page)
    return None


def walk_messages(client, cid, limit=100, max_pages=10000):
    def check_cursor(cursor, page):
        assert cursor == page["data"][-1]["message_id"], page

    out = _walk(lambda cursor: client.messages_page(cid, limit=limit, before_message_id=cursor),
                limit, max_pages, check_cursor)
    if out is None:
        raise AssertionError("message walk did not end")
    return out


def walk_conversations(client, uid, limit=100, max_pages=10000):
    def check_cursor(cursor, page):
        assert isinstance(cursor, str) and cursor, page

    out = _walk(lambda cursor: client.conversations_page(uid, limit=limit, before_conversation_id=cursor),
                limit, max_pages, check_cursor)
    if out is None:
        raise AssertionError("conversation walk did not end")
    return out


def snapshot(client, user_ids, usernames=()):
    """Everything reachable from the given users: users, conversations, messages."""
    snap = {"users": {}, "by_name": {}, "conversations": {}, "messages": {}, "lists": {}}
    for uid in user_ids:
        status, body, _ = client.call("GET", f"/api/users/{uid}")
        snap["users"][uid] = (status, body)
        lst = walk_conversations(client, uid, limit=100)
        snap["lists"][uid] = lst
        for c in lst:
            cid = c["conversation_id"]
            if cid not in snap["conversations"]:
                status, body, _ = client.call("GET", f"/api/conversations/{cid}")
                snap["conversations"][cid] = (status, body)
                snap["messages"][cid] = walk_messages(client, cid, limit=100)
    for name in usernames:
        status, body, _ = client.call("GET", "/api/users" + query({"username": name}))
        snap["by_name"][name] = (status, body)
    return snap
