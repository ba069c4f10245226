"""Black-box HTTP test harness for the messenger server.

Starts the real binary (``$MESSENGER_BIN``, default ``<repo>/build/messenger``)
on a free localhost port with a fresh temporary data directory, and talks to
it over keep-alive ``http.client`` connections.

Fixtures
    server          module-scoped server on an empty store
    seeded_server   module-scoped server on a store written by ``messenger seed``
    client          a Client bound to ``server``
    seeded_client   a Client bound to ``seeded_server``
    server_factory  start/stop servers on a given directory (restart tests)
    lib             helper functions (conversation id derivation, format checks,
                    page walks, store snapshots)
    auth_server     module-scoped server with accounts and access control on
                    (fast password hashing, 1 s SSE heartbeat)
    new_account     registers + logs in a fresh user on ``auth_server``:
                    an Account with .user_id .username .password .token .client

Every server starts with MESSENGER_AUTH=off unless asked for auth (the open,
FastAPI-compatible API the older tests were written for); ``auth=True``
starts it with MESSENGER_AUTH=on, ``auth=None`` leaves the server's default.

Only pytest and the standard library are used.
"""

import atexit
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import types
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MESSENGER_BIN = os.environ.get("MESSENGER_BIN") or str(REPO_ROOT / "build" / "messenger")

# MESSENGER_TEST_STORE=cassandra runs the whole suite on the Cassandra store
# (a real Cassandra on 127.0.0.1:9042, see scripts/cassandra); each data
# directory then stands for a keyspace of its own.
TEST_STORE = os.environ.get("MESSENGER_TEST_STORE", "lmdb")
CASSANDRA = TEST_STORE == "cassandra"

STARTUP_TIMEOUT = 60.0 if CASSANDRA else 10.0  # a new keyspace takes a few seconds
SHUTDOWN_TIMEOUT = 10.0
SEED_TIMEOUT = 120.0 if CASSANDRA else 60.0


_KEYSPACES = {}  # keyspace -> the data directory it stands for
_DRIVER = []     # a lazily opened DataStax driver session


def store_args(data_dir):
    """The flags that point serve/seed at the store under test for data_dir."""
    if not CASSANDRA:
        return ["--data-dir", str(data_dir)]
    path = Path(data_dir).resolve()
    ks = "t_" + hashlib.sha1(str(path).encode()).hexdigest()[:24]
    _KEYSPACES[ks] = path
    return ["--store", "cassandra", "--cassandra-keyspace", ks]


def drop_keyspaces_under(root):
    """Drops the keyspaces of data directories below root. Each costs
    Cassandra memory for its tables; a single 1 GiB test node stops
    answering with a few hundred of them, so a suite cleans up as it goes."""
    if not CASSANDRA:
        return
    root = Path(root).resolve()
    doomed = [ks for ks, path in _KEYSPACES.items() if path == root or root in path.parents]
    if not doomed:
        return
    if not _DRIVER:
        from cassandra.cluster import Cluster
        cluster = Cluster(["127.0.0.1"], port=9042)
        _DRIVER.append((cluster, cluster.connect()))
    session = _DRIVER[0][1]
    for ks in doomed:
        session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=60)
        del _KEYSPACES[ks]

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

# --------------------------------------------------------------------------
# server processes
# --------------------------------------------------------------------------

_ALL_SERVERS = []       # every ServerProcess started in this session
_RECENTLY_STOPPED = []  # servers stopped during the current test


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_binary():
    if not (os.path.isfile(MESSENGER_BIN) and os.access(MESSENGER_BIN, os.X_OK)):
        pytest.fail(
            f"messenger binary not found at {MESSENGER_BIN}; build it with "
            f"`make -C {REPO_ROOT}` or set MESSENGER_BIN",
            pytrace=False,
        )


def run_seed(data_dir):
    """Runs `messenger seed --data-dir DIR`; fails the test on a non-zero exit."""
    _require_binary()
    proc = subprocess.run(
        [MESSENGER_BIN, "seed", *store_args(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=SEED_TIMEOUT,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"`messenger seed --data-dir {data_dir}` exited with {proc.returncode}:\n"
            + proc.stdout.decode("utf-8", "replace"),
            pytrace=False,
        )
    return proc


# Password hashing that costs about a millisecond: registrations and logins
# are part of most auth tests.
FAST_ARGON2 = ("--argon2-memory-kib", "1024", "--argon2-iterations", "1")
AUTH_ARGS = FAST_ARGON2 + ("--sse-heartbeat", "1")


def server_env(auth=False, env=None):
    """The environment of a server: ours, with MESSENGER_AUTH set from auth
    (False: off, True: on, None: unset, so the server's default applies),
    then env's entries (a value of None removes the variable)."""
    e = dict(os.environ)
    e.pop("MESSENGER_AUTH", None)
    # Every test registers its users from 127.0.0.1: lift the per-address
    # registration limit (tests/security tests the limit itself).
    e.setdefault("MESSENGER_REGISTER_ATTEMPTS", "1000000")
    if auth is not None:
        e["MESSENGER_AUTH"] = "on" if auth else "off"
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    return e


class ServerProcess:
    """One running `messenger serve` process.

    args are extra command-line flags; auth and env make the environment
    (see server_env): by default MESSENGER_AUTH=off."""

    def __init__(self, data_dir, log_dir=None, args=(), env=None, auth=False):
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir) if log_dir else self.data_dir.parent
        self.args = [str(a) for a in args]
        self.env = env
        self.auth = auth
        self.proc = None
        self.port = None
        self.log_path = None
        self.returncode = None

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def command(self):
        return [MESSENGER_BIN, "serve", "--listen", f"127.0.0.1:{self.port}",
                *store_args(self.data_dir), "--log-level", "warn", *self.args]

    @property
    def host(self):
        return "127.0.0.1"

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, limit=8000):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8", "replace")
        if len(text) > limit:
            text = "...[truncated]...\n" + text[-limit:]
        return text

    def start(self):
        _require_binary()
        last_error = None
        for attempt in range(3):  # a port can be taken between probe and bind
            self.port = _free_port()
            self.log_path = self.log_dir / f"messenger-{self.port}-{attempt}.log"
            log = open(self.log_path, "wb")
            try:
                self.proc = subprocess.Popen(
                    self.command(), env=server_env(self.auth, self.env),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                )
            finally:
                log.close()
            _ALL_SERVERS.append(self)
            ok, last_error = self._wait_healthy()
            if ok:
                self.returncode = None
                return self
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if "address already in use" not in self.log_text().lower():
                break
        pytest.fail(
            f"messenger did not become healthy within {STARTUP_TIMEOUT}s "
            f"(exit code {self.proc.poll()}, last error {last_error!r}).\n"
            f"command: MESSENGER_AUTH={server_env(self.auth, self.env).get('MESSENGER_AUTH', '')} "
            f"{' '.join(self.command())}\n"
            f"--- server log ---\n{self.log_text()}",
            pytrace=False,
        )

    def _wait_healthy(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last_error = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, f"exited with {self.proc.returncode}"
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                conn.request("GET", "/health")
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status == 200:
                    return True, None
                last_error = f"GET /health -> {resp.status}"
            except OSError as e:  # refused while starting, etc.
                last_error = repr(e)
            time.sleep(0.05)
        return False, last_error

    def stop(self):
        """SIGTERM, wait, and return the exit code. Kills on timeout."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = "timeout"
                self.proc = None
                _RECENTLY_STOPPED.append(self)
                return self.returncode
        self.returncode = self.proc.returncode
        self.proc = None
        _RECENTLY_STOPPED.append(self)
        return self.returncode

    def stop_and_check(self):
        rc = self.stop()
        assert rc == 0, (
            f"messenger did not shut down cleanly on SIGTERM (exit code {rc!r}, "
            f"expected 0 within {SHUTDOWN_TIMEOUT}s)\n--- server log ---\n{self.log_text()}"
        )

    def client(self, retry=True, token=None):
        if token is not None:
            return AuthClient(self.host, self.port, token, retry=retry)
        return Client(self.host, self.port, retry=retry)


@atexit.register
def _kill_leftovers():
    for srv in _ALL_SERVERS:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()


def pytest_sessionfinish(session, exitstatus):
    """Drops the keyspaces that are left (before the driver's own exit hook
    shuts its connections down)."""
    try:
        drop_keyspaces_under("/")
    except Exception as e:  # cleaning up must not turn a green run red
        print(f"conftest: could not drop test keyspaces: {e}")
    for cluster, _ in _DRIVER:
        cluster.shutdown()
    _DRIVER.clear()


class ServerFactory:
    """Starts servers on chosen directories; stops whatever is left at teardown."""

    def __init__(self, tmp_root):
        self.tmp_root = Path(tmp_root)
        self.started = []

    def new_dir(self, name="data"):
        d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp_root))
        return d

    def start(self, data_dir, args=(), env=None, auth=False):
        srv = ServerProcess(data_dir, log_dir=self.tmp_root, args=args, env=env, auth=auth)
        srv.start()
        self.started.append(srv)
        return srv

    def seed(self, data_dir):
        return run_seed(data_dir)

    def cleanup(self):
        bad = []
        for srv in self.started:
            if srv.alive:
                rc = srv.stop()
                if rc != 0:
                    bad.append((srv, rc))
        return bad


# --------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------

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


def query(params):
    params = {k: v for k, v in params.items() if v is not None}
    if not params:
        return ""
    from urllib.parse import urlencode
    return "?" + urlencode(params)


def walk_messages(client, cid, limit=100, max_pages=10000):
    out, cursor = [], None
    for _ in range(max_pages):
        page = client.messages_page(cid, limit=limit, before_message_id=cursor)
        check_page_shape(page, limit)
        out.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert cursor == page["data"][-1]["message_id"], page
    raise AssertionError("message walk did not end")


def walk_conversations(client, uid, limit=100, max_pages=10000):
    out, cursor = [], None
    for _ in range(max_pages):
        page = client.conversations_page(uid, limit=limit, before_conversation_id=cursor)
        check_page_shape(page, limit)
        out.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert isinstance(cursor, str) and cursor, page
    raise AssertionError("conversation walk did not end")


# --------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------

def derive_conversation_id(a, b):
    """SHA-256 over the two lowercase ids sorted and concatenated; first 16 bytes."""
    x, y = sorted([str(a).lower(), str(b).lower()])
    return str(uuid.UUID(bytes=hashlib.sha256((x + y).encode("ascii")).digest()[:16]))


def is_canonical_uuid(s):
    return isinstance(s, str) and bool(UUID_RE.match(s))


def check_uuid(s, version=None):
    assert is_canonical_uuid(s), f"not a lowercase canonical UUID: {s!r}"
    if version is not None:
        u = uuid.UUID(s)
        assert s[14] == str(version), f"UUID {s} has version nibble {s[14]}, expected {version}"
        assert u.variant == uuid.RFC_4122, f"UUID {s} is not an RFC 4122 variant UUID"


def check_time(s):
    assert isinstance(s, str) and TIME_RE.match(s), f"not an ISO-8601 UTC ms time: {s!r}"
    return parse_time(s)


def parse_time(s):
    """Milliseconds since the Unix epoch."""
    import datetime
    dt = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return round(dt.timestamp() * 1000)


def timeuuid_key(s):
    u = uuid.UUID(s)
    return (u.time, u.clock_seq, u.node)


def check_error(body, status=None):
    assert isinstance(body, dict), f"error body is not a JSON object: {body!r}"
    assert isinstance(body.get("detail"), str), f"error body has no string detail: {body!r}"


def check_page_shape(page, limit):
    assert isinstance(page, dict), page
    assert set(page) >= {"total", "limit", "data", "next_cursor"}, page
    assert isinstance(page["data"], list), page
    assert page["total"] == len(page["data"]), page
    assert page["limit"] == limit, page
    assert len(page["data"]) <= limit, page


def check_message(m):
    assert set(m) >= {"message_id", "conversation_id", "sender_id", "receiver_id",
                      "content", "created_at"}, m
    check_uuid(m["message_id"], version=1)
    check_uuid(m["conversation_id"])
    check_uuid(m["sender_id"])
    check_uuid(m["receiver_id"])
    assert isinstance(m["content"], str), m
    check_time(m["created_at"])
    assert m["conversation_id"] == derive_conversation_id(m["sender_id"], m["receiver_id"]), m


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


LIB = types.SimpleNamespace(
    derive_conversation_id=derive_conversation_id,
    is_canonical_uuid=is_canonical_uuid,
    check_uuid=check_uuid,
    check_time=check_time,
    parse_time=parse_time,
    timeuuid_key=timeuuid_key,
    check_error=check_error,
    check_page_shape=check_page_shape,
    check_message=check_message,
    walk_messages=walk_messages,
    walk_conversations=walk_conversations,
    snapshot=snapshot,
    query=query,
    run_seed=run_seed,
    Client=Client,
    AuthClient=AuthClient,
    ServerProcess=ServerProcess,
    new_username=new_username,
    new_password=new_password,
    register=register,
    login=login,
    new_account=make_account,
    make_account=make_account,
    server_env=server_env,
    FAST_ARGON2=FAST_ARGON2,
    AUTH_ARGS=AUTH_ARGS,
    CASSANDRA=CASSANDRA,
    SHUTDOWN_TIMEOUT=SHUTDOWN_TIMEOUT,
    MESSENGER_BIN=MESSENGER_BIN,
)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def lib():
    return LIB


@pytest.fixture(scope="module")
def _module_tmp():
    d = tempfile.mkdtemp(prefix="messenger-http-")
    yield Path(d)
    drop_keyspaces_under(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def server(_module_tmp):
    data_dir = _module_tmp / "data"
    data_dir.mkdir()
    srv = ServerProcess(data_dir, log_dir=_module_tmp).start()
    yield srv
    srv.stop_and_check()


@pytest.fixture(scope="module")
def seeded_server(_module_tmp):
    data_dir = _module_tmp / "seeded"
    data_dir.mkdir()
    run_seed(data_dir)
    srv = ServerProcess(data_dir, log_dir=_module_tmp).start()
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
    data_dir = _module_tmp / "auth"
    data_dir.mkdir()
    srv = ServerProcess(data_dir, log_dir=_module_tmp, args=AUTH_ARGS, auth=True).start()
    yield srv
    srv.stop_and_check()


@pytest.fixture
def new_account(auth_server):
    """new_account(username=None, password=None) -> a logged-in Account on
    auth_server; its client is closed after the test."""
    made = []

    def make(username=None, password=None):
        acct = make_account(auth_server, username, password)
        made.append(acct)
        return acct

    yield make
    for a in made:
        a.close()


@pytest.fixture
def server_factory():
    tmp = tempfile.mkdtemp(prefix="messenger-http-factory-")
    factory = ServerFactory(tmp)
    yield factory
    bad = factory.cleanup()
    drop_keyspaces_under(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    assert not bad, f"servers did not shut down cleanly: {[(str(s.data_dir), rc) for s, rc in bad]}"


# --------------------------------------------------------------------------
# show the server log of failing tests
# --------------------------------------------------------------------------

def pytest_runtest_setup(item):
    _RECENTLY_STOPPED.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    seen = set()
    for srv in [s for s in _ALL_SERVERS if s.alive] + list(_RECENTLY_STOPPED):
        if id(srv) in seen:
            continue
        seen.add(id(srv))
        text = srv.log_text()
        if text.strip():
            rep.sections.append((f"messenger log (port {srv.port}, {srv.data_dir})", text))
