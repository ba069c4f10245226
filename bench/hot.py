#!/usr/bin/env python3
"""hot.py - issue 14's hot-conversation scenario on Cassandra: does a user's
conversation list stay fast while one of their conversations takes a flood
of sends?

  python3 bench/hot.py [--bin build/release/messenger] [--sends 250000]
                       [--hub 100000] [--duration 10]

On a keyspace of its own (dropped at the end) it:
  1. makes a user U with 50 conversations and a hot partner H (who has 50
     of its own), and measures both lists (GET /api/conversations/user/{id}
     ?limit=20, wrk, 64 connections): "fresh";
  2. sends --sends messages between U and H (wrk POSTs, 64 connections);
  3. measures both lists again: "after N hot sends", and traces the list's
     recency SELECTs (the DataStax driver, tracing on) for the tombstone
     cells they read;
  4. with --hub N, seeds a third user with N conversations (`messenger seed
     --hub-conversations N`, opened 1 ms apart) and measures that user's
     list against that of a user with 50 (V), measured right before it;
     then both again once Cassandra has flushed and compacted the keyspace
     (`nodetool flush` and `compact`): what the lists cost once the bulk
     load has settled, as it has for a user who gathered them over time.
Prints one line per measurement and a JSON line (BENCH_HOT {...}).

--bin can be an older build (the previous design's table is traced then).
Needs a Cassandra on 127.0.0.1:9042, wrk, and the `cassandra-driver` Python
package (as tests/cassandra does).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (run_wrk, write_lines, Client, free_port)

READ_EVENT = re.compile(r"Read (\d+) live rows and (\d+) tombstone cells")
BUCKET_TICKS = 300 * 10_000_000


def start_server(binary, keyspace, log_path):
    port = bench.free_port()
    args = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--log-level", "warn", "--auth", "off",
            "--store", "cassandra", "--cassandra-keyspace", keyspace]
    proc = subprocess.Popen(args, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}; see {log_path}")
        try:
            c = bench.Client(port)
            status, _ = c.get("/health")
            c.close()
            if status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not answer /health")


def post(c, path, body):
    status, doc = c.post(path, body)
    if status != 201:
        raise RuntimeError(f"{path} -> {status} {doc}")
    return doc


def user(c, name):
    return post(c, "/api/users", {"username": name})["user_id"]


def send(c, a, b, text):
    return post(c, "/api/messages/", {"sender_id": a, "receiver_id": b, "content": text})


def measure(port, work, name, uid, duration, conns=64):
    f = bench.write_lines(work / f"list_{name}.txt", [f"GET /api/conversations/user/{uid}?limit=20"])
    bench.run_wrk(port, conns, [(1, f)], 2)  # warm-up
    r = bench.run_wrk(port, conns, [(1, f)], duration)
    rate = r["requests"] / (r["duration_us"] / 1e6)
    print(f"list {name:<28} {rate:9.0f} req/s  p50 {r['p50_us'] / 1000:7.2f} ms  p99 {r['p99_us'] / 1000:7.2f} ms"
          f"  errors {r['errors_total']}", flush=True)
    return {"rate": rate, "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "errors": r["errors_total"]}


def hot_sends(port, work, a, b, n, conns=64):
    lines = [f'POST /api/messages/ {json.dumps({"sender_id": s, "receiver_id": r, "content": "hot"})}'
             for s, r in ((a, b), (b, a))]
    f = bench.write_lines(work / "hot_sends.txt", lines)
    sent, t0 = 0, time.monotonic()
    while sent < n:
        r = bench.run_wrk(port, conns, [(1, f)], 5)
        sent += r["requests"] - r["errors_total"]
    took = time.monotonic() - t0
    print(f"hot sends: {sent} in {took:.0f} s ({sent / took:.0f}/s)", flush=True)
    return sent


def tombstones(session, ks, uid):
    """(live rows, tombstone cells) the list's recency reads of uid touch."""
    tables = {r.table_name for r in session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", [ks])}
    u = uuid.UUID(uid)
    if "conversation_recency" in tables:
        cols = f"SELECT activity, conversation_id, tier, pos FROM {ks}.conversation_recency "
        top, l0, t0 = traced(session, cols + "WHERE user_id = %s AND tier = 0 LIMIT 29", [u])
        lo = top[-1].activity // BUCKET_TICKS if len(top) == 29 else 0
        _, l1, t1 = traced(session, cols + "WHERE user_id = %s AND tier = 1 AND pos >= %s AND pos <= %s LIMIT 5000",
                           [u, lo, 2**63 - 1])
        return l0 + l1, t0 + t1
    _, live, tomb = traced(session, f"SELECT activity, conversation_id FROM {ks}.conversations_by_recency "
                           "WHERE user_id = %s LIMIT 29", [u])
    return live, tomb


def traced(session, query, params):
    from cassandra.query import SimpleStatement
    rs = session.execute(SimpleStatement(query), params, trace=True)
    rows = list(rs)
    live = tomb = 0
    for e in rs.get_query_trace(max_wait_sec=30).events:
        m = READ_EVENT.search(e.description)
        if m:
            live += int(m.group(1))
            tomb += int(m.group(2))
    return rows, live, tomb


def make_hub(binary, ks, n, work):
    """`messenger seed` a user (user0000000) with n conversations into ks,
    opened 1 ms apart; returns that user's id."""
    args = [binary, "seed", "--store", "cassandra", "--cassandra-keyspace", ks, "--users", str(n + 1),
            "--conversations", "0", "--messages", "0", "--hub-conversations", str(n), "--long-conversation", "0",
            "--log-level", "warn"]
    t0 = time.monotonic()
    subprocess.run(args, check=True, stdout=open(work / "seed.log", "ab"), stderr=subprocess.STDOUT, timeout=3600)
    print(f"hub: {n} conversations seeded in {time.monotonic() - t0:.0f} s", flush=True)
    return bench.user_id(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(bench.ROOT / "build" / "release" / "messenger"))
    ap.add_argument("--sends", type=int, default=250000)
    ap.add_argument("--hub", type=int, default=0)
    ap.add_argument("--duration", type=float, default=10)
    args = ap.parse_args()
    from cassandra.cluster import Cluster
    cluster = Cluster(["127.0.0.1"], port=9042)
    session = cluster.connect()
    ks = f"hot_{uuid.uuid4().hex[:12]}"
    work = Path(tempfile.mkdtemp(prefix="bench-hot-"))
    proc, port = start_server(args.bin, ks, work / "server.log")
    out = {"bin": args.bin, "keyspace": ks}
    try:
        c = bench.Client(port)
        tag = uuid.uuid4().hex[:6]
        u, h = user(c, f"u-{tag}"), user(c, f"h-{tag}")
        for i in range(50):
            send(c, user(c, f"p{i}-{tag}"), u, "hello")
            send(c, h, user(c, f"q{i}-{tag}"), "hello")
        send(c, u, h, "start")
        out["fresh_u"] = measure(port, work, "U fresh", u, args.duration)
        out["fresh_h"] = measure(port, work, "H fresh", h, args.duration)
        out["trace_fresh_u"] = tombstones(session, ks, u)
        out["sends"] = hot_sends(port, work, u, h, args.sends)
        out["after_u"] = measure(port, work, "U after hot sends", u, args.duration)
        out["after_h"] = measure(port, work, "H after hot sends", h, args.duration)
        # Cassandra flushes and compacts what the flood wrote meanwhile (on
        # the same cores): U once more, a run later.
        out["after_u_again"] = measure(port, work, "U after hot sends, again", u, args.duration)
        out["trace_after_u"] = tombstones(session, ks, u)
        out["trace_after_h"] = tombstones(session, ks, h)
        print(f"trace (live rows, tombstone cells): U fresh {out['trace_fresh_u']}, U after {out['trace_after_u']}, "
              f"H after {out['trace_after_h']}", flush=True)
        if args.hub:
            v = user(c, f"v-{tag}")  # 50 conversations, nothing hot: the hub's pair
            for i in range(50):
                send(c, user(c, f"r{i}-{tag}"), v, "hello")
            hub = make_hub(args.bin, ks, args.hub, work)
            out["list_50"] = measure(port, work, "V (50 convs)", v, args.duration)
            out["hub"] = measure(port, work, f"hub ({args.hub} convs)", hub, args.duration)
            out["trace_hub"] = tombstones(session, ks, hub)
            t0 = time.monotonic()
            for cmd in (["flush", ks], ["compact", ks]):
                subprocess.run([str(bench.ROOT / "scripts" / "cassandra"), "nodetool"] + cmd, check=True,
                               stdout=subprocess.DEVNULL, timeout=1800)
            print(f"keyspace flushed and compacted in {time.monotonic() - t0:.0f} s", flush=True)
            out["list_50_settled"] = measure(port, work, "V (50 convs), settled", v, args.duration)
            out["hub_settled"] = measure(port, work, f"hub ({args.hub} convs), settled", hub, args.duration)
        c.close()
    finally:
        proc.terminate()
        proc.wait(60)
        if os.environ.get("BENCH_HOT_KEEP") != "1":
            session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=120)
        cluster.shutdown()
    print("BENCH_HOT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
