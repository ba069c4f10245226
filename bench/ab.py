#!/usr/bin/env python3
"""bench/ab.py - A/B of messenger binaries on this machine, in one run.

    python3 bench/ab.py OLD_BINARY NEW_BINARY [MORE...]

Each binary seeds its own small data set (1,000 users, 5,000 conversations,
200,000 messages), then the binaries take turns, ROUNDS times (the order
reversed every other round, so drift hits both), each serving three wrk runs
of DUR seconds at 64 connections, auth off: /health, a page of 20 messages,
and a durable send. It prints every run, then per scenario the median rate
and the median server CPU per request (user + system time of the server
process over the run, divided by the requests it answered): on a shared
2-core machine the CPU figure moves less than the rate.

Knobs: ROUNDS (5), DUR (4), SCEN ("health,page,send"). Needs wrk and the
bench/mix.lua script; what `make bench` measures on 2M messages is in
bench/README.md, this is the quick ratio for one change.
"""
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MIX = os.path.join(HERE, "mix.lua")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
DUR = os.environ.get("DUR", "4")
SCEN = os.environ.get("SCEN", "health,page,send").split(",")


def seed(binary, d):
    subprocess.run([binary, "seed", "--data-dir", d, "--users", "1000", "--conversations", "5000",
                    "--messages", "200000", "--log-level", "warn"], check=True)


def start(binary, d, port):
    p = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", d, "--auth", "off",
                          "--log-level", "error"])
    for _ in range(100):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/health")
            c.getresponse().read()
            return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit(f"{binary} did not start")


def request_files(port, work):
    c = http.client.HTTPConnection("127.0.0.1", port)

    def get(path):
        c.request("GET", path)
        return json.loads(c.getresponse().read())
    users = [u["user_id"] for u in (get(f"/api/users?username=user{i:07d}") for i in range(200)) if "user_id" in u]
    convs = [x["conversation_id"] for u in users[:100] for x in get(f"/api/conversations/user/{u}?limit=20")["data"]]
    files = {s: os.path.join(work, f"{s}-{port}") for s in ("health", "page", "send")}
    with open(files["health"], "w") as f:
        f.write("GET /health\n")
    with open(files["page"], "w") as f:
        f.writelines(f"GET /api/messages/conversation/{cv}?limit=20\n" for cv in convs)
    with open(files["send"], "w") as f:
        for _ in range(2000):
            a, b = random.sample(users, 2)
            f.write(f'POST /api/messages/ {json.dumps({"sender_id": a, "receiver_id": b, "content": "benchmark"})}\n')
    return files


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port, path):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{DUR}s", "-s", MIX, f"http://127.0.0.1:{port}", "--", f"1:{path}"],
                         capture_output=True, text=True).stdout
    r = json.loads(re.search(r"BENCH_RESULT (\{.*\})", out).group(1))
    return r["requests"], r["requests"] / (r["duration_us"] / 1e6), r["p99_us"] / 1000


def main():
    bins = sys.argv[1:]
    if len(bins) < 2:
        raise SystemExit(__doc__)
    work = tempfile.mkdtemp(prefix="messenger-ab-")
    dirs = []
    for i, b in enumerate(bins):
        dirs.append(os.path.join(work, f"data{i}"))
        seed(b, dirs[-1])
    rate = {(i, s): [] for i in range(len(bins)) for s in SCEN}
    cpu = {(i, s): [] for i in range(len(bins)) for s in SCEN}
    for rnd in range(ROUNDS):
        order = list(range(len(bins)))
        if rnd % 2:
            order.reverse()
        for i in order:
            port = 19000 + rnd * 10 + i
            p = start(bins[i], dirs[i], port)
            files = request_files(port, work)
            for s in SCEN:
                c0 = cpu_seconds(p.pid)
                n, r, p99 = wrk(port, files[s])
                us = (cpu_seconds(p.pid) - c0) / n * 1e6
                rate[(i, s)].append(r)
                cpu[(i, s)].append(us)
                print(f"round {rnd} binary {i} {s:6} {r:9.0f} req/s  p99 {p99:7.2f} ms  server CPU {us:6.2f} us/req",
                      flush=True)
            p.terminate()
            p.wait()
    print()
    for s in SCEN:
        base_r, base_c = statistics.median(rate[(0, s)]), statistics.median(cpu[(0, s)])
        for i in range(len(bins)):
            r, c = statistics.median(rate[(i, s)]), statistics.median(cpu[(i, s)])
            print(f"{s:6} binary {i}: {r:9.0f} req/s ({r / base_r:6.1%}), {c:6.2f} us CPU/req ({c / base_c:6.1%})")


if __name__ == "__main__":
    main()
