"""Which store a server or a command runs on, and the Cassandra keyspaces
the suites make.

On LMDB a data directory is the store. On Cassandra (env.CASSANDRA) each data
directory stands for a keyspace of its own, named from its path, so the
suites can be written once in terms of directories. Every keyspace made
here is remembered and dropped: each costs Cassandra memory for its tables,
and a single 1 GiB test node stops answering with a few hundred of them, so
a suite cleans up as it goes (drop_keyspaces_under after each module's
directory, close() at the end of the session drops what is left).

The DataStax driver is imported only when a keyspace is dropped: the LMDB
runs do not need it installed.
"""
import hashlib
import uuid
from pathlib import Path

from .env import CASSANDRA

_KEYSPACES = {}  # keyspace -> the data directory it stands for
_SESSION = []    # a lazily opened (cluster, session) of the DataStax driver


def store_args(data_dir):
    """The flags that point serve/seed at the store under test for data_dir."""
    if not CASSANDRA:
        return ["--data-dir", str(data_dir)]
    path = Path(data_dir).resolve()
    ks = "t_" + hashlib.sha1(str(path).encode()).hexdigest()[:24]
    _KEYSPACES[ks] = path
    return keyspace_args(ks)


def keyspace_args(keyspace):
    """The flags that put a server on the named Cassandra keyspace."""
    return ["--store", "cassandra", "--cassandra-keyspace", keyspace]


def new_keyspace(prefix="c"):
    """A fresh keyspace name (not created: the server or the test does that)."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _session():
    if not _SESSION:
        from cassandra.cluster import Cluster
        cluster = Cluster(["127.0.0.1"], port=9042)
        _SESSION.append((cluster, cluster.connect()))
    return _SESSION[0][1]


def _shutdown():
    for cluster, _ in _SESSION:
        cluster.shutdown()
    _SESSION.clear()


def drop_keyspaces(names):
    """Drops the named keyspaces (those that exist)."""
    names = list(names)
    for ks in names:
        try:
            _session().execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=60)
        except Exception:
            # The node may have been restarted under the session (the
            # failover test does that), and the driver waits a growing
            # while before it reconnects: once, on a new connection.
            _shutdown()
            _session().execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=60)
        _KEYSPACES.pop(ks, None)


def drop_keyspaces_under(root):
    """Drops the keyspaces of data directories below root (Cassandra runs only)."""
    if not CASSANDRA:
        return
    root = Path(root).resolve()
    drop_keyspaces([ks for ks, path in _KEYSPACES.items() if path == root or root in path.parents])


def close():
    """Drops the keyspaces that are left and shuts the driver down (before
    the driver's own exit hook shuts its connections down)."""
    try:
        drop_keyspaces_under("/")
    except Exception as e:  # cleaning up must not turn a green run red
        print(f"tests/support: could not drop test keyspaces: {e}")
    _shutdown()
