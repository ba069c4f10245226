"""What every Python suite (tests/http, tests/security, tests/cassandra)
shares: start and stop the real server on either store, talk to it, make
users and messages, read its event stream.

    env         what the environment says: the binary, the store under
                test, the default waits
    store       which store a server runs on; the Cassandra keyspaces the
                suites make, and dropping them
    server      ServerProcess (start, stop with a signal, kill, log,
                client), ServerFactory, `messenger seed` and other
                commands, sanitizer reports in a server's log
    client      the keep-alive JSON client (Client, AuthClient) and page walks
    checks      pure helpers: conversation ids, UUID and time formats,
                page and message shapes
    factories   users (register, login, Account) and messages (one send,
                many at once)
    sse         the Server-Sent Events client (SSEStream, Block, EOF)
    raw         raw sockets: chosen source addresses, resets, requests
                that lie, responses read byte for byte
    fixtures    the pytest fixtures and hooks the suites share

Each suite's conftest.py puts tests/ on sys.path and imports the fixtures
it uses from support.fixtures; test modules import from the modules above.
Only pytest and the standard library (and the DataStax driver, imported
when a Cassandra keyspace is dropped).
"""
