#!/usr/bin/env python3
"""bench.py - the benchmark driver behind `make bench` (bench/run.sh).

run.sh installs the Debian packages, builds build/messenger with release
flags, raises the open-file limit and then runs this script, which:

  1. seeds (or reuses) the data sets under bench/results/data-*/,
  2. starts the server on a free loopback port,
  3. writes the request files the wrk script bench/mix.lua draws from
     (prefetching real next_cursor values over HTTP),
  4. runs every scenario with wrk (a warm-up run, then the measured run),
     reading the server's RSS from /proc after each,
  5. holds 10,000 idle keep-alive connections (bench/idle_conns.py) and
     reads the server's anonymous RSS,
  6. runs the scale scenarios on a second data set (on Cassandra only with
     BENCH_CASSANDRA_SCALE=1; there it also runs `messenger-bench-store
     --requests` next to the page-read and send scenarios, on their request
     files: the "store ceiling" rows),
  7. prints the table and the targets, and writes bench/results/bench-*.json,
     bench-*.txt and bench-*.png (plus latest.* copies).

Knobs are environment variables; see bench/README.md or the KNOBS table
below. Python standard library only.
"""
import datetime
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BIN = ROOT / "build" / "messenger"
# The store benchmark, built beside the server (Makefile: BENCH_STORE).
BENCH_STORE_BIN = ROOT / "build" / "release" / "messenger-bench-store"
MIX_LUA = BENCH / "mix.lua"

# ------------------------------------------------------------------ knobs

QUICK = os.environ.get("BENCH_QUICK", "") == "1"


def env_str(name, default):
    v = os.environ.get(name, "").strip()
    return v if v else default


def env_num(name, default, kind=int):
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    try:
        return kind(v)
    except ValueError:
        sys.exit(f"bench: {name}={v!r} is not a number")


KNOBS = {
    "STORES": env_str("STORES", "lmdb").split(),
    "BENCH_QUICK": QUICK,
    "BENCH_FRESH": os.environ.get("BENCH_FRESH", "") == "1",
    "BENCH_DURATION": env_num("BENCH_DURATION", 2.0 if QUICK else 10.0, float),
    "BENCH_WARMUP": env_num("BENCH_WARMUP", 1.0 if QUICK else 2.0, float),
    "BENCH_CONNECTIONS": env_num("BENCH_CONNECTIONS", 64),
    "BENCH_SWEEP": [int(x) for x in env_str("BENCH_SWEEP", "1 64" if QUICK else "1 8 64 256").split()],
    "BENCH_WRK_THREADS": env_num("BENCH_WRK_THREADS", 2),
    "BENCH_SERVER_THREADS": env_num("BENCH_SERVER_THREADS", 0),   # 0: the server's default (CPU count)
    "BENCH_USERS": env_num("BENCH_USERS", 10000),
    "BENCH_CONVERSATIONS": env_num("BENCH_CONVERSATIONS", 100000),
    "BENCH_MESSAGES": env_num("BENCH_MESSAGES", 2000000),
    "BENCH_HUB": env_num("BENCH_HUB", 100000),
    "BENCH_LONG": env_num("BENCH_LONG", 1000000),
    "BENCH_IDLE_CONNECTIONS": env_num("BENCH_IDLE_CONNECTIONS", 10000),
    "BENCH_SCALE_ROUNDS": env_num("BENCH_SCALE_ROUNDS", 1 if QUICK else 5),
    "BENCH_RATIO_ROUNDS": env_num("BENCH_RATIO_ROUNDS", 1 if QUICK else 5),
    "BENCH_SCENARIOS": env_str("BENCH_SCENARIOS", "health,page,list,send,mixed,memory,scale,hot").split(","),
    "BENCH_HOT_SENDS": env_num("BENCH_HOT_SENDS", 20000 if QUICK else 250000),  # the hot scenario (Cassandra)
    "BENCH_PORT": env_num("BENCH_PORT", 0),                        # 0: a free port
    "BENCH_STRICT": os.environ.get("BENCH_STRICT", "") == "1",     # exit 1 when a target falls short
    # Cassandra's main data set (the minimum by default; BENCH_QUICK: a small set that seeds
    # in well under a minute, 30 messages per conversation on average so that cursor pages exist).
    "BENCH_CASSANDRA_USERS": env_num("BENCH_CASSANDRA_USERS", 1000 if QUICK else 10000),
    "BENCH_CASSANDRA_CONVERSATIONS": env_num("BENCH_CASSANDRA_CONVERSATIONS", 2000 if QUICK else 100000),
    "BENCH_CASSANDRA_MESSAGES": env_num("BENCH_CASSANDRA_MESSAGES", 60000 if QUICK else 2000000),
    "BENCH_CASSANDRA_SCALE": os.environ.get("BENCH_CASSANDRA_SCALE", "") == "1",  # opt-in: seeds 1M messages
    "BENCH_CASSANDRA_MEMORY": os.environ.get("BENCH_CASSANDRA_MEMORY", "1") != "0",
}
DURATION = KNOBS["BENCH_DURATION"]
WARMUP = KNOBS["BENCH_WARMUP"]
CONNS = KNOBS["BENCH_CONNECTIONS"]
SWEEP = sorted(set(KNOBS["BENCH_SWEEP"]) | {CONNS})
SCENARIOS = {s.strip() for s in KNOBS["BENCH_SCENARIOS"] if s.strip()}

# Targets (issue text): all at CONNS connections, wrk on the same machine.
PAGE_VS_HEALTH = 0.60
PAGE_P99_MS = 5.0
LIST_VS_HEALTH = 0.50
SEND_VS_HEALTH = 0.30
SCALE_RATIO = 1.25
IDLE_ANON_MIB = 64.0
HTTP_VS_STORE_CEILING = 0.70   # Cassandra: page reads and sends via HTTP vs `messenger-bench-store`
MIN_DATASET = (10000, 100000, 2000000)  # the minimum data set (users, conversations, messages)
NOISY_CPU_PERCENT = 10.0   # a run is marked when other processes used this much CPU during it

PREFETCH_CONVERSATIONS = 3000    # first pages fetched to collect real next_cursor values
FIRST_PAGE_CONVERSATIONS = 20000  # distinct conversations in the first-page pool
SEND_LINES = 10000               # distinct send requests (random pairs of the generated set)
SYNTH_CURSORS = 2000             # cursor positions per conversation in the scale scenario


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ ids

def user_name(i):
    return f"user{i:07d}"


def user_id(i):
    """The seeder's id for user i: SHA-256 of its name, as a version-4 UUID."""
    d = bytearray(hashlib.sha256(b"messenger-seed-user:" + user_name(i).encode()).digest()[:16])
    d[6] = (d[6] & 0x0F) | 0x40
    d[8] = (d[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(d)))


def conversation_id(a, b):
    """The conversation of two users: SHA-256 of the sorted id strings."""
    x, y = sorted((a.lower(), b.lower()))
    return str(uuid.UUID(bytes=hashlib.sha256((x + y).encode()).digest()[:16]))


def generated_pair(k, users):
    """Users (a, b) of conversation k of the generated set."""
    a = k % users
    return a, (a + 1 + k // users) % users


def timeuuid(ticks, rng):
    """A version-1 UUID at `ticks` (100 ns since 1582) with a random clock
    sequence and node: a valid before_message_id for any position."""
    cs = rng.getrandbits(14)
    return str(uuid.UUID(fields=(ticks & 0xFFFFFFFF, (ticks >> 32) & 0xFFFF, ((ticks >> 48) & 0x0FFF) | 0x1000,
                                 (cs >> 8) | 0x80, cs & 0xFF, rng.getrandbits(48))))


# ------------------------------------------------------------------ machine

def machine_info():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass

    def out(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    wrk_v = out("wrk", "-v").splitlines()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": os.uname().release,
        "memory": mem,
        "os": out("sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""),
        "wrk": wrk_v[0] if wrk_v else "",
        "messenger": out(str(BIN), "--version"),
        "git_commit": out("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
        "git_dirty": bool(out("git", "-C", str(ROOT), "status", "--porcelain", "--", "src")),
    }


def cpu_snapshot():
    """{pid: (comm, CPU ticks)} of every user-space process, and the time."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            comm = st[st.index("(") + 1:st.rindex(")")]
            fields = st[st.rindex(")") + 2:].split()
            if int(d) == 2 or fields[1] == "2":
                continue  # kernel threads (block I/O workers serve the server's own writes)
            out[int(d)] = (comm, int(fields[11]) + int(fields[12]))
        except (OSError, ValueError, IndexError):
            pass
    return time.monotonic(), out


def other_cpu(before, after, exclude):
    """Processes other than `exclude` (pids) that used CPU between two
    snapshots: [{pid, comm, cpu_percent}], busiest first. wrk has exited by
    the second snapshot and so does not count; a process started in between
    counts with all its time."""
    hz = os.sysconf("SC_CLK_TCK")
    secs = max(after[0] - before[0], 1e-3)
    out = []
    for pid, (comm, t) in after[1].items():
        if pid in exclude:
            continue
        t0 = before[1].get(pid, (comm, 0))[1]
        pct = (t - t0) / hz / secs * 100
        if pct >= 1:
            out.append({"pid": pid, "comm": comm, "cpu_percent": round(pct, 1)})
    return sorted(out, key=lambda x: -x["cpu_percent"])


def busy_processes(seconds=1.0, threshold=5.0):
    """Other processes using more than `threshold` % of a CPU over `seconds`:
    wrk shares the machine with the server already; anything else makes the
    numbers noisy, so the run says so."""
    a = cpu_snapshot()
    time.sleep(seconds)
    b = cpu_snapshot()
    return [p for p in other_cpu(a, b, {os.getpid()}) if p["cpu_percent"] >= threshold]


# ------------------------------------------------------------------ HTTP

class Client:
    """A small keep-alive JSON client for set-up (not for load)."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        return r.status, doc

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body):
        return self.request("POST", path, body)

    def close(self):
        self.conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ server

class Server:
    def __init__(self, backend, data_dir, log_path):
        self.backend = backend
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = KNOBS["BENCH_PORT"] or free_port()
        self.proc = None

    def start(self):
        # The scenarios are the FastAPI-compatible open API (no tokens in
        # the wrk scripts): auth off, as behind a gateway that authenticates.
        args = [str(BIN), "serve", "--listen", f"127.0.0.1:{self.port}", "--log-level", "warn", "--auth", "off"]
        args += self.backend.store_args(self.data_dir)
        if KNOBS["BENCH_SERVER_THREADS"]:
            args += ["--threads", str(KNOBS["BENCH_SERVER_THREADS"])]
        self.log_file = open(self.log_path, "ab")
        log(f"starting {' '.join(args)}")
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=self.log_file)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                c = Client(self.port)
                status, _ = c.get("/health")
                c.close()
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not answer /health within 60 s")

    def rss(self):
        """VmRSS, RssAnon, RssFile, VmHWM and thread count from /proc."""
        out = {}
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[k] = round(int(v.split()[0]) / 1024, 1)  # kB -> MiB
                elif k == "Threads":
                    out[k] = int(v)
        except OSError:
            pass
        return out

    def write_bytes(self):
        """Bytes the server caused to be written to storage (/proc/PID/io)."""
        try:
            for line in open(f"/proc/{self.proc.pid}/io"):
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log("server did not stop within 60 s of SIGTERM; killing it")
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()
        if self.proc.returncode != 0:
            log(f"server exited with {self.proc.returncode}; see {self.log_path}")


# ------------------------------------------------------------------ stores

def sources_digest(paths):
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode())
        try:
            h.update((ROOT / p).read_bytes())
        except OSError:
            pass
    return h.hexdigest()[:16]


class Backend:
    """A store under benchmark. Each data set has a directory
    bench/results/data-<store>-<label>/ that holds its stamp (what it was
    seeded with) and, for lmdb, the data itself. A store adds a subclass that
    says how to seed and serve it; BACKENDS maps --store names to them."""
    name = None
    sources = ["src/seed.c"]     # files whose change invalidates cached data sets

    def store_args(self, data_dir):
        """Flags that point `seed` and `serve` at this data set."""
        raise NotImplementedError

    def clear(self, data_dir):
        """Removes an earlier (outdated or half-done) data set."""
        if data_dir.exists():
            shutil.rmtree(data_dir)

    def warm(self, data_dir):
        pass

    def size_mib(self, data_dir):
        return None

    def main_size(self):
        """(users, conversations, messages) of the main data set."""
        return KNOBS["BENCH_USERS"], KNOBS["BENCH_CONVERSATIONS"], KNOBS["BENCH_MESSAGES"]

    def ensure_up(self):
        """Makes sure the store's service runs (nothing to do for embedded stores)."""

    def shutdown(self):
        """Undoes ensure_up: stops only what this run started."""

    def system_pids(self):
        """Processes that belong to the system under test besides the server
        (not counted as "other processes" in the noise check)."""
        return set()

    def skipped(self, scenario):
        """None, or why this store skips `scenario` ("memory", "scale")."""
        return None

    # Whether a set that an earlier run's send scenarios wrote to is seeded
    # again rather than reused, so that a run starts from the set its stamp
    # describes.
    reseed_after_sends = False

    def stamp(self, seed_params):
        return {"store": self.name, "seed": [str(x) for x in seed_params], "version": machine_version(),
                "sources": sources_digest(self.sources)}

    def dataset(self, label, seed_params, prepare=None):
        """Returns the data set seeded with seed_params, reusing a cached one
        whose stamp matches (same parameters, binary version and seed/store
        sources). prepare(data_dir) runs once after a fresh seed (the scale
        set's extras over HTTP); the stamp is written only after it, so a
        half-prepared set is seeded again."""
        d = RESULTS / f"data-{self.name}-{label}"
        stamp_path = d / "bench-stamp.json"
        want = self.stamp(seed_params)
        if not KNOBS["BENCH_FRESH"] and stamp_path.exists():
            try:
                have = json.loads(stamp_path.read_text())
            except ValueError:
                have = {}
            sent = self.reseed_after_sends and have.get("sends_started")
            if all(have.get(k) == v for k, v in want.items()) and not sent:
                log(f"reusing the data set {d.relative_to(ROOT)} (BENCH_FRESH=1 seeds it again)")
                return d, have
            if sent:
                log(f"{d.relative_to(ROOT)}: an earlier run sent messages into it: seeding again")
            else:
                log(f"{d.relative_to(ROOT)} was seeded with other parameters or sources: seeding again")
        self.clear(d)
        d.mkdir(parents=True, exist_ok=True)
        args = [str(BIN), "seed"] + self.store_args(d) + [str(a) for a in seed_params] + ["--log-level", "warn"]
        log(f"seeding: {' '.join(args)}")
        if self.name == "cassandra":
            writes = sum(int(seed_params[i + 1]) for i, a in enumerate(seed_params)
                         if a in ("--users", "--conversations", "--messages", "--hub-conversations",
                                  "--long-conversation"))
            log(f"seeding Cassandra: about {writes:,} writes at 2,000-5,000/s on 2 cores: "
                f"{writes / 5000 / 60:.0f}-{writes / 2000 / 60:.0f} min; the seeder prints progress every 10 s. "
                "An interrupted seed resumes (rows already there are skipped).")
        t0 = time.monotonic()
        subprocess.run(args, check=True)
        want["seed_seconds"] = round(time.monotonic() - t0, 1)
        if prepare:
            want["extras"] = prepare(d)
        want["bench_runs"] = 0
        stamp_path.write_text(json.dumps(want, indent=1))
        return d, want

    def note_sending(self, data_dir):
        """Marks, in the stamp, that sends into the set are about to start
        (before they do: a run that fails or is stopped halfway counts)."""
        self._update_stamp(data_dir, lambda st: st.update(sends_started=True))

    def _update_stamp(self, data_dir, change):
        p = data_dir / "bench-stamp.json"
        try:
            st = json.loads(p.read_text())
            change(st)
            p.write_text(json.dumps(st, indent=1))
        except (OSError, ValueError):
            pass

    def note_run(self, data_dir, sends):
        """Counts, in the stamp, the messages benchmark runs added."""
        def count(st):
            st["bench_runs"] = st.get("bench_runs", 0) + 1
            st["bench_messages_added"] = st.get("bench_messages_added", 0) + sends
        self._update_stamp(data_dir, count)


class LmdbBackend(Backend):
    """The embedded store: the data directory is the data set. A set that
    an earlier run's send scenarios wrote to is seeded again (about 20 s for
    the main set): a full run doubles it, and sends on a grown set ran
    measurably slower (bench/README.md, "Sends change the data set")."""
    name = "lmdb"
    sources = ["src/seed.c"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src/store/lmdb").glob("*.[ch]"))
    reseed_after_sends = True

    def store_args(self, data_dir):
        return ["--store", self.name, "--data-dir", str(data_dir)]

    def warm(self, data_dir):
        """Reads the store's files once, so that runs start from a warm page
        cache whether the set was just seeded or comes from disk. data.mdb is
        sparse (its size is the map size): only its data extents are read.
        First the file's pages are dropped from the page cache, then read
        back with small reads marked random (no readahead). Why: on recent
        kernels ext4 caches files in large folios when they are read
        sequentially or written through a shared mapping (the seeder's bulk
        mode), and then every 4 KiB page LMDB writes dirties a whole large
        folio: durable sends ran 2-3x slower right after seeding than after
        this step (see README, "Results")."""
        t0 = time.monotonic()
        n = 0
        for f in sorted(Path(data_dir).glob("*.mdb")):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: the seeder synced
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                end = os.fstat(fd).st_size
                pos = 0
                while pos < end:
                    try:
                        pos = os.lseek(fd, pos, os.SEEK_DATA)
                        hole = os.lseek(fd, pos, os.SEEK_HOLE)
                    except OSError:  # no more data, or no SEEK_DATA here
                        break
                    while pos < hole:
                        b = os.pread(fd, min(64 << 10, hole - pos), pos)
                        if not b:
                            break
                        pos += len(b)
                        n += len(b)
            finally:
                os.close(fd)
        log(f"page cache warmed: {n / 2**20:.0f} MiB read in {time.monotonic() - t0:.1f} s")

    def size_mib(self, data_dir):
        """Disk space used (data.mdb is sparse: its apparent size is the map size)."""
        return round(sum(f.stat().st_blocks * 512 for f in Path(data_dir).glob("*.mdb")) / 2**20, 1)


class CassandraBackend(Backend):
    """Cassandra: one keyspace per data set, named after it; the directory
    only holds the stamp. The server finds the cluster through its own
    settings (CASSANDRA_HOSTS etc., see `messenger --help`); ensure_up()
    starts the local node with scripts/cassandra when it is not running (and
    shutdown() stops it again only then). Clearing an outdated set drops
    its keyspace (see clear()); messages that earlier bench runs added to a
    set that is reused stay (the stamp counts them). The ceiling
    rows come from `messenger-bench-store --requests` on the same keyspace
    and the same request files as the HTTP scenarios."""
    name = "cassandra"
    sources = ["src/seed.c"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src/store/cassandra").glob("*.[ch]"))

    def store_args(self, data_dir):
        ks = re.sub(r"[^a-z0-9_]", "_", data_dir.name.lower().replace("data-cassandra-", "bench_"))
        return ["--store", self.name, "--cassandra-keyspace", ks[:48]]

    def clear(self, data_dir):
        """A complete set (it has a stamp) of other parameters or sources:
        drops its keyspace, so that the new seed is the set it claims to be
        (a seed into an old keyspace adds to it: one seeded twice made every
        user's first list page meet ~400 moved rows, 2026-11-28). Without a
        stamp the seed was interrupted: it resumes, skipping rows already
        there."""
        stamp = data_dir / "bench-stamp.json"
        if not stamp.exists():
            return
        ks = self.store_args(data_dir)[-1]
        contacts = [h.strip().partition(":") for h in os.environ.get("CASSANDRA_HOSTS", "127.0.0.1:9042").split(",")]
        hosts, port = [h for h, _, _ in contacts], int(contacts[0][2] or 9042)
        # With the DataStax driver, in the `python3` of PATH: the one that
        # scripts/deps.sh installed it for (run.sh may run this file with
        # another).
        drop = ("import sys\nfrom cassandra.cluster import Cluster\n"
                "c = Cluster(sys.argv[3].split(','), port=int(sys.argv[2]))\n"
                "try:\n    c.connect().execute('DROP KEYSPACE IF EXISTS ' + sys.argv[1], timeout=120)\n"
                "finally:\n    c.shutdown()\n")
        p = subprocess.run(["python3", "-c", drop, ks, str(port), ",".join(hosts)], capture_output=True, text=True,
                           timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"cannot drop the outdated keyspace {ks}: {p.stderr.strip()[-400:]}")
        log(f"cassandra: dropped the keyspace {ks} of the outdated set")
        stamp.unlink()

    def main_size(self):
        return (KNOBS["BENCH_CASSANDRA_USERS"], KNOBS["BENCH_CASSANDRA_CONVERSATIONS"],
                KNOBS["BENCH_CASSANDRA_MESSAGES"])

    def warm(self, data_dir):
        """Flushes and compacts conversations_by_recency before the runs.
        Every send deletes the user's previous recency row; the table is set
        up for the compaction that drops those tombstones (gc_grace_seconds
        0, levelled, single-sstable tombstone compactions), but right after a
        seed of 2,000,000 sends in ~20 minutes it has not caught up, and
        each list page reads through the tombstones. (On 2026-11-28, on a
        keyspace seeded twice, the list stayed at ~140 req/s even so: the
        tombstones were not dropped; see docs/performance.md.)"""
        ks = self.store_args(data_dir)[-1]
        t0 = time.monotonic()
        for cmd in (["flush", ks, "conversations_by_recency"], ["compact", ks, "conversations_by_recency"]):
            p = subprocess.run(["bash", str(ROOT / "scripts" / "cassandra"), "nodetool"] + cmd,
                               capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                note(f"[cassandra] nodetool {' '.join(cmd)} failed ({p.returncode}): "
                     f"{(p.stderr or p.stdout).strip()[-300:]}")
                return
        log(f"cassandra: flushed and compacted {ks}.conversations_by_recency in {time.monotonic() - t0:.1f} s")

    started_here = False
    pid = None

    def _status(self):
        p = subprocess.run(["bash", str(ROOT / "scripts" / "cassandra"), "status"], capture_output=True, text=True)
        m = re.search(r"pid (\d+)", p.stdout)
        return p.returncode, p.stdout.strip(), int(m.group(1)) if m else None

    def ensure_up(self):
        """scripts/cassandra start, unless it is running already (then it is
        left running at the end). A node that another session is starting is
        waited for, not started again. Fails loudly when it cannot start."""
        rc, out, pid = self._status()
        if rc == 0:
            log(f"cassandra: {out} (already running: left running at the end)")
        elif "starting" in out:
            log(f"cassandra: {out}: waiting for it (started by someone else: left running at the end)")
            deadline = time.monotonic() + 300
            while rc != 0 and time.monotonic() < deadline:
                time.sleep(2)
                rc, out, pid = self._status()
            if rc != 0:
                raise RuntimeError(f"cassandra did not open 127.0.0.1:9042 within 300 s: {out}")
        else:
            log("cassandra: not running; scripts/cassandra start (stopped again at the end of this run)")
            p = subprocess.run(["bash", str(ROOT / "scripts" / "cassandra"), "start"])
            if p.returncode != 0:
                raise RuntimeError(f"scripts/cassandra start failed ({p.returncode}); see its output above "
                                   "and ~/.cache/messenger/cassandra/logs/")
            self.started_here = True
            rc, out, pid = self._status()
            if rc != 0:
                raise RuntimeError(f"scripts/cassandra start returned but: {out}")
        self.pid = pid

    def shutdown(self):
        if self.started_here:
            log("cassandra: stopping the node this run started (scripts/cassandra stop)")
            subprocess.run(["bash", str(ROOT / "scripts" / "cassandra"), "stop"])
            self.started_here = False

    def system_pids(self):
        return {self.pid} if self.pid else set()

    def skipped(self, scenario):
        if scenario == "scale" and not KNOBS["BENCH_CASSANDRA_SCALE"]:
            return ("scale scenarios skipped on cassandra: seeding the 1,000,000-message conversation and "
                    "100,000 hub conversations takes 5-10 minutes at 2,000-5,000 writes/s "
                    "(BENCH_CASSANDRA_SCALE=1 runs them)")
        if scenario == "memory" and not KNOBS["BENCH_CASSANDRA_MEMORY"]:
            return "memory scenario skipped on cassandra (BENCH_CASSANDRA_MEMORY=0)"
        return None

    def ceiling(self, data_dir, scenario, conns, duration, requests):
        """`messenger-bench-store` on the same keyspace: the CQL client alone
        issuing the statements the API issues for the lines of the request
        file `requests` (the HTTP scenario's). Returns its JSON line."""
        args = [str(BENCH_STORE_BIN)] + self.store_args(data_dir) + [
            "--duration", str(duration), "--concurrency", str(conns), "--scenario", scenario,
            "--requests", str(requests), "--log-level", "warn"]
        p = subprocess.run(args, capture_output=True, text=True, timeout=duration + 180)
        m = re.search(r"^(\{.*\})$", p.stdout, re.M)
        if p.returncode != 0 or not m:
            raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-400:]}")
        return json.loads(m.group(1))


BACKENDS = {"lmdb": LmdbBackend, "cassandra": CassandraBackend}


_version = None


def machine_version():
    global _version
    if _version is None:
        _version = subprocess.run([str(BIN), "--version"], capture_output=True, text=True).stdout.strip()
    return _version


# ------------------------------------------------------------------ wrk

def run_wrk(port, conns, pools, duration):
    """Runs wrk with mix.lua over pools [(weight, file)], returns its numbers."""
    threads = max(1, min(KNOBS["BENCH_WRK_THREADS"], conns))
    args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration:g}s", "--timeout", "5s",
            "-s", str(MIX_LUA), f"http://127.0.0.1:{port}", "--"] + [f"{w}:{f}" for w, f in pools]
    p = subprocess.run(args, capture_output=True, text=True, timeout=duration + 120)
    out = p.stdout
    m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stderr.strip() or out.strip()}")
    r = json.loads(m.group(1))
    # Errors as wrk's own summary prints them: "Non-2xx or 3xx responses: N"
    # and "Socket errors: connect A, read B, write C, timeout D".
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    r["socket_errors"] = sum(int(x) for x in sock.groups()) if sock else 0
    r["errors_total"] = r["non2xx"] + r["socket_errors"]
    r["wrk_threads"] = threads
    return r


# ------------------------------------------------------------------ request files

def write_lines(path, lines):
    with open(path, "w") as f:
        for line in lines:
            f.write(line + "\n")
    return str(path)


def mix_file(path, pools):
    """One request file that draws like mix.lua over pools [(weight, file)],
    for `bench-store --requests` (which draws a line uniformly): each pool's
    lines are cycled to its weight's share of the lines, so that every pool
    is drawn with mix.lua's probability and its lines about uniformly."""
    pools = [(w, open(f).read().splitlines()) for w, f in pools]
    pools = [(w, [x for x in lines if x.strip()]) for w, lines in pools]
    pools = [(w, lines) for w, lines in pools if w > 0 and lines]
    if not pools:
        raise RuntimeError(f"mix_file {path}: no requests")
    total_w = sum(w for w, _ in pools)
    # enough lines that the pool with the most lines per weight has each once
    total = max(len(lines) * total_w / w for w, lines in pools)
    out = []
    for w, lines in pools:
        n = max(1, round(total * w / total_w))
        out += [lines[i % len(lines)] for i in range(n)]
    return write_lines(path, out)


def page_path(conv, cursor=None, limit=20):
    p = f"/api/messages/conversation/{conv}?limit={limit}"
    return p + f"&before_message_id={cursor}" if cursor else p


def prepare_main(client, work, rng, U, C):
    """Request files for the main data set (U users, C conversations); checks
    the id derivation on the way."""
    users = [user_id(i) for i in range(U)]
    files = {"health": write_lines(work / "health.txt", ["GET /health"])}

    # Page read: first pages of many conversations, plus cursor pages whose
    # cursors are real next_cursor values from prefetched pages (up to the
    # third page of a conversation).
    ks = rng.sample(range(C), min(C, FIRST_PAGE_CONVERSATIONS))
    convs = []
    for k in ks:
        a, b = generated_pair(k, U)
        convs.append((conversation_id(users[a], users[b]), users[a], users[b]))
    first = [f"GET {page_path(c)}" for c, _, _ in convs]
    cursors = []
    t0 = time.monotonic()
    for conv, ua, ub in convs[:PREFETCH_CONVERSATIONS]:
        cursor = None
        for depth in range(3):
            status, doc = client.get(page_path(conv, cursor))
            if status != 200:
                raise RuntimeError(f"prefetch: GET {page_path(conv, cursor)} -> {status} {doc}; "
                                   "the id derivation in bench.py does not match the seeder")
            if depth == 0 and doc["data"]:
                m = doc["data"][0]
                if m["conversation_id"] != conv or {m["sender_id"], m["receiver_id"]} != {ua, ub}:
                    raise RuntimeError(f"prefetch: conversation {conv} holds unexpected messages: {m}")
            cursor = doc.get("next_cursor")
            if not cursor:
                break
            cursors.append(f"GET {page_path(conv, cursor)}")
    log(f"prefetched {PREFETCH_CONVERSATIONS} conversations in {time.monotonic() - t0:.1f} s: "
        f"{len(cursors)} cursor pages")
    files["page_first"] = write_lines(work / "page_first.txt", first)
    files["page_cursor"] = write_lines(work / "page_cursor.txt", cursors)

    # Conversation list: every user's first page.
    lists = [f"GET /api/conversations/user/{u}?limit=20" for u in users]
    for line in rng.sample(lists, 20):
        status, doc = client.get(line[4:])
        if status != 200 or not doc["data"]:
            raise RuntimeError(f"check: {line} -> {status} {doc}")
    files["list"] = write_lines(work / "list.txt", lists)

    # Sends: random conversations of the generated set, random direction, so
    # that they add messages to existing conversations.
    sends = []
    tag = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    for i in range(SEND_LINES):
        a, b = generated_pair(rng.randrange(C), U)
        if rng.random() < 0.5:
            a, b = b, a
        body = json.dumps({"sender_id": users[a], "receiver_id": users[b],
                           "content": f"bench {tag} message {i}: the quick brown fox jumps over the lazy dog"},
                          separators=(",", ":"))
        sends.append(f"POST /api/messages/ {body}")
    status, doc = client.post("/api/messages/", json.loads(sends[0].split(" ", 2)[2]))
    if status != 201:
        raise RuntimeError(f"check: POST /api/messages/ -> {status} {doc}")
    files["send"] = write_lines(work / "send.txt", sends)
    return files


def ensure_user(client, name):
    status, doc = client.post("/api/users", {"username": name})
    if status == 201:
        return doc["user_id"]
    status, doc = client.get(f"/api/users?username={name}")
    if status != 200:
        raise RuntimeError(f"cannot create or find user {name}: {status} {doc}")
    return doc["user_id"]


def scale_extras(backend, data_dir, work):
    """After seeding the scale set: over HTTP, a conversation of 100 messages
    between two fresh users, and a fresh user with 10 conversations."""
    srv = Server(backend, data_dir, work / "server-scale-prepare.log").start()
    try:
        c = Client(srv.port)
        a, b = ensure_user(c, "bench_small_a"), ensure_user(c, "bench_small_b")
        for i in range(100):
            s, r = (a, b) if i % 2 == 0 else (b, a)
            status, doc = c.post("/api/messages/", {"sender_id": s, "receiver_id": r,
                                                    "content": f"Small conversation message {i}"})
            if status != 201:
                raise RuntimeError(f"scale extras: send -> {status} {doc}")
        fan = ensure_user(c, "bench_fan")
        for i in range(2, 12):
            status, doc = c.post("/api/messages/", {"sender_id": fan, "receiver_id": user_id(i),
                                                    "content": f"Hello {user_name(i)}"})
            if status != 201:
                raise RuntimeError(f"scale extras: send -> {status} {doc}")
        c.close()
        return {"small_a": a, "small_b": b, "fan": fan}
    finally:
        srv.stop()


def conversation_cursors(client, conv, rng, limit=20):
    """Cursor positions spread over a whole conversation: synthetic timeuuids
    between its (limit+1)-th oldest and its newest message, so every cursor
    page is a full page. Returns (first_page_line, cursor_lines, n_messages_hint)."""
    status, doc = client.get(page_path(conv, limit=1))
    if status != 200 or not doc["data"]:
        raise RuntimeError(f"scale: conversation {conv} -> {status} {doc}")
    t_hi = uuid.UUID(doc["data"][0]["message_id"]).time
    status, doc = client.get(f"/api/messages/conversation/{conv}?limit={limit + 1}"
                             "&after_message_id=00000000-0000-1000-8000-000000000000")
    if status != 200 or len(doc["data"]) < limit + 1:
        raise RuntimeError(f"scale: oldest messages of {conv} -> {status} {doc}")
    t_lo = sorted(uuid.UUID(m["message_id"]).time for m in doc["data"])[limit]
    cursors = [f"GET {page_path(conv, timeuuid(rng.randint(t_lo + 1, t_hi), rng), limit)}"
               for _ in range(SYNTH_CURSORS)]
    for line in cursors[:20]:
        status, doc = client.get(line[4:])
        if status != 200 or len(doc["data"]) != limit:
            raise RuntimeError(f"scale: {line} -> {status}, {len(doc['data']) if doc else 0} messages")
    return f"GET {page_path(conv, limit=limit)}", cursors


def prepare_scale(client, work, extras, rng):
    hub, other = user_id(0), user_id(1)
    files = {}
    for label, conv in (("small", conversation_id(extras["small_a"], extras["small_b"])),
                        ("long", conversation_id(hub, other))):
        first, cursors = conversation_cursors(client, conv, rng)
        files[f"page_{label}_first"] = write_lines(work / f"scale_page_{label}_first.txt", [first])
        files[f"page_{label}_cursor"] = write_lines(work / f"scale_page_{label}_cursor.txt", cursors)
    # limit=10 for both: the pages are then the same size (10 items), and the
    # pair compares 10 against 100,000 conversations, not 10 against 20 items.
    for label, uid, want in (("small", extras["fan"], 10), ("hub", hub, 10)):
        line = f"GET /api/conversations/user/{uid}?limit=10"
        status, doc = client.get(line[4:])
        if status != 200 or len(doc["data"]) != want:
            raise RuntimeError(f"scale: {line} -> {status}, {len(doc['data']) if doc else 0} conversations")
        files[f"list_{label}"] = write_lines(work / f"scale_list_{label}.txt", [line])
    return files


# ------------------------------------------------------------------ scenarios

class Run:
    def __init__(self, store, data_dir, server, results, exclude=()):
        self.store = store
        self.data_dir = data_dir
        self.server = server
        self.results = results
        self.exclude = set(exclude)   # pids of the system under test besides the server (Cassandra)

    def ceiling(self, backend, scenario, conns, requests):
        """Row "store ceiling: <scenario>": `messenger-bench-store --requests`
        against the same data set, with the HTTP scenario's requests (the file
        `requests`), same duration and concurrency (after a warm-up run like
        theirs). The server stays up but idle."""
        duration = max(1, int(round(DURATION)))
        row = {"scenario": f"store ceiling: {scenario}", "group": "ceiling", "store": self.store,
               "connections": conns, "duration_s": duration, "requests_file": os.path.basename(requests)}
        try:
            if WARMUP > 0:
                w = backend.ceiling(self.data_dir, scenario, conns, max(1, int(round(WARMUP))), requests)
                row["warmup_ops"] = w["ops"]
            snap = cpu_snapshot()
            r = backend.ceiling(self.data_dir, scenario, conns, duration, requests)
            others = other_cpu(snap, cpu_snapshot(), {os.getpid(), self.server.proc.pid} | self.exclude)
            row["other_cpu_percent"] = round(sum(p["cpu_percent"] for p in others), 1)
            row["other_cpu_top"] = others[:3]
            row.update({"rps": float(r["ops_per_s"]), "requests": r["ops"], "p50_ms": r["p50_ms"],
                        "p99_ms": r["p99_ms"], "errors": r["errors"], "bench_store": r})
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
            row["failed"] = str(e)
            log(f"store ceiling: {scenario} failed: {e}")
        self.results.append(row)
        print_row(row)
        return row

    def scenario(self, name, group, conns, pools, duration=None):
        row = self.measure(name, group, conns, pools, duration)
        self.results.append(row)
        print_row(row)
        return row

    def pair(self, group, conns, a, b, rounds):
        """Runs two scenarios (name, pools) alternately, `rounds` times each
        (a, b, a, b, ...; the warm-up only before the first round of each),
        and reports for each the median over its rounds of req/s, p50 and p99,
        each taken on its own: latency on two busy cores varies a lot from run
        to run (scheduling, pauses of the VM), so one unlucky round should not
        decide a latency ratio, and neither should the choice of one round (a
        round picked for its median p99 could carry the worst p50). Every
        round is kept in the JSON ("rounds")."""
        runs = {a[0]: [], b[0]: []}
        for i in range(rounds):
            for name, pools in (a, b):
                r = self.measure(name, group, conns, pools, warmup=i == 0)
                log(f"{name} round {i + 1}/{rounds}: " + ("failed" if "failed" in r else
                    f"{r['rps']:,.0f} req/s, p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms"))
                runs[name].append(r)
        for name in (a[0], b[0]):
            ok = [r for r in runs[name] if "failed" not in r]
            best = dict(ok[0] if ok else runs[name][-1])
            if ok:
                for k in ("rps", "p50_ms", "p99_ms"):
                    best[k] = statistics.median(r[k] for r in ok)
                best["errors"] = sum(r["errors"] for r in ok)   # errors of every round count
                best["aggregate"] = f"median of {len(ok)} rounds"
            best["rounds"] = [{k: r.get(k) for k in ("rps", "p50_ms", "p99_ms", "errors", "other_cpu_percent",
                                                     "failed") if k in r} for r in runs[name]]
            self.results.append(best)
            print_row(best)
        return runs

    def measure(self, name, group, conns, pools, duration=None, warmup=True):
        duration = duration or DURATION
        row = {"scenario": name, "group": group, "store": self.store, "connections": conns,
               "duration_s": duration}
        try:
            if warmup and WARMUP > 0:
                run_wrk(self.server.port, conns, pools, WARMUP)
            wb = self.server.write_bytes()
            snap = cpu_snapshot()
            r = run_wrk(self.server.port, conns, pools, duration)
            others = other_cpu(snap, cpu_snapshot(), {os.getpid(), self.server.proc.pid} | self.exclude)
            row["server_write_mib"] = round((self.server.write_bytes() - wb) / 2**20, 1)
            # CPU used by processes other than the server and wrk during the
            # run, in % of one CPU: another workload on the machine.
            row["other_cpu_percent"] = round(sum(p["cpu_percent"] for p in others), 1)
            row["other_cpu_top"] = others[:3]
            secs = r["duration_us"] / 1e6
            row.update({
                "rps": round(r["requests"] / secs, 1) if secs else 0.0,
                "requests": r["requests"],
                "bytes_per_response": round(r["bytes"] / r["requests"]) if r["requests"] else 0,
                "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000,
                "p99_ms": r["p99_us"] / 1000, "p999_ms": r["p999_us"] / 1000,
                "max_ms": r["max_us"] / 1000, "mean_ms": round(r["mean_us"] / 1000, 3),
                "errors": r["errors_total"], "non2xx": r["non2xx"], "socket_errors": r["socket_errors"],
                "wrk_errors": r["errors"], "wrk_threads": r["wrk_threads"],
            })
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
            row["failed"] = str(e)
            log(f"{name} at {conns} connections failed: {e}")
        row["server"] = self.server.rss()
        return row


def memory_scenario(run, count):
    """RssAnon with `count` idle keep-alive connections that each did one GET /health."""
    row = {"scenario": f"idle {count} conns", "group": "memory", "store": run.store, "connections": count}
    row["server_before"] = run.server.rss()
    held = {}
    client = subprocess.Popen([sys.executable, str(BENCH / "idle_conns.py"), "--port", str(run.server.port),
                               "--count", str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = client.stdout.readline()
        held = json.loads(line) if line else {"event": "error", "detail": "client exited"}
        row["client"] = held
        time.sleep(1.0)  # let the server settle after the last response
        row["server"] = run.server.rss()
        client.stdin.write("\n")
        client.stdin.flush()
        line = client.stdout.readline()
        row["client_closed"] = json.loads(line) if line else None
        client.wait(timeout=120)
        time.sleep(1.0)
        row["server_after"] = run.server.rss()
        if held.get("event") != "holding" or held.get("failed"):
            row["failed"] = f"client: {held}"
        if row["client_closed"] and row["client_closed"].get("dropped_while_held"):
            row["failed"] = f"server dropped {row['client_closed']['dropped_while_held']} idle connections"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    row["errors"] = (held.get("failed", 0) or 0) if isinstance(held, dict) else count
    run.results.append(row)
    print_row(row)
    return row


# ------------------------------------------------------------------ output

HEADER = (f"{'scenario':<26} {'store':<9} {'conns':>6} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7} {'RSS MiB':>8} {'anon MiB':>8}")


def fmt_row(r):
    srv = r.get("server", {})
    rss = f"{srv.get('VmRSS', 0):8.1f}" if srv else f"{'-':>8}"
    anon = f"{srv.get('RssAnon', 0):8.1f}" if srv else f"{'-':>8}"
    if r["group"] == "memory":
        return (f"{r['scenario']:<26} {r['store']:<9} {r['connections']:>6} {'-':>10} {'-':>8} {'-':>8} "
                f"{r.get('errors', 0):>7} {rss} {anon}" + ("  FAILED" if "failed" in r else ""))
    if "failed" in r:
        return f"{r['scenario']:<26} {r['store']:<9} {r['connections']:>6} FAILED: {r['failed'][:80]}"
    noisy = r.get("other_cpu_percent", 0) >= NOISY_CPU_PERCENT
    return (f"{r['scenario']:<26} {r['store']:<9} {r['connections']:>6} {r['rps']:>10,.0f} {r['p50_ms']:>8.3f} "
            f"{r['p99_ms']:>8.3f} {r['errors']:>7} {rss} {anon}" +
            (f"  ! other processes: {r['other_cpu_percent']:.0f}% CPU ({r['other_cpu_top'][0]['comm']})"
             if noisy else ""))


_printed_header = False


def print_row(r):
    global _printed_header
    if not _printed_header:
        print(HEADER, flush=True)
        _printed_header = True
    print(fmt_row(r), flush=True)


def find(results, store, scenario, conns=None):
    for r in results:
        if r["store"] == store and r["scenario"] == scenario and (conns is None or r["connections"] == conns) \
                and "failed" not in r:
            return r
    return None


def health_reference(scenario):
    """The /health rows that a target scenario is compared with. /health
    alone swings by a third within a day on this shared VM (85k-160k req/s):
    one /health run minutes before the scenario decided its ratio as much as
    the scenario did. So each target scenario runs in rounds alternating with
    /health (health, scenario, health, scenario, ...), and the ratio is that
    of the two medians."""
    return f"health (paired with {scenario})"


def targets(results, store):
    out = []

    def add(ok, what, detail):
        out.append({"store": store, "target": what, "status": "NOT RUN" if ok is None else
                    ("PASS" if ok else "FALLS SHORT"), "detail": detail})

    for scen, share, label in (("page read", PAGE_VS_HEALTH, "page read"),
                               ("conversation list", LIST_VS_HEALTH, "conversation list"),
                               ("send (durable)", SEND_VS_HEALTH, "durable sends")):
        r = find(results, store, scen, CONNS)
        health = find(results, store, health_reference(scen), CONNS) or find(results, store, "health", CONNS)
        what = f"{label} >= {share:.0%} of /health"
        if not (r and health):
            add(None, what, "")
        else:
            ratio = r["rps"] / health["rps"] if health["rps"] else 0
            add(ratio >= share and r["errors"] == 0, what,
                f"{r['rps']:,.0f} / {health['rps']:,.0f} req/s = {ratio:.1%}"
                + (f" (medians of {len(r['rounds'])} rounds alternating with /health)" if "rounds" in r else "")
                + (f", {r['errors']} errors" if r["errors"] else ""))
        if scen == "page read":
            what = f"page read p99 < {PAGE_P99_MS:g} ms"
            add(None if not r else r["p99_ms"] < PAGE_P99_MS, what, f"p99 {r['p99_ms']:.3f} ms" if r else "")
    if store == "cassandra" or any(r["store"] == store and r["group"] == "ceiling" for r in results):
        for scen, ceil, label in (("page read", "store ceiling: page", "page read via HTTP"),
                                  ("send (durable)", "store ceiling: send", "durable sends via HTTP")):
            what = f"{label} >= {HTTP_VS_STORE_CEILING:.0%} of bench-store {ceil.split(': ')[1]}"
            r, c = find(results, store, scen, CONNS), find(results, store, ceil, CONNS)
            if not (r and c):
                add(None, what, "")
                continue
            ratio = r["rps"] / c["rps"] if c["rps"] else 0
            add(ratio >= HTTP_VS_STORE_CEILING and r["errors"] == 0 and c["errors"] == 0, what,
                f"{r['rps']:,.0f} / {c['rps']:,.0f} req/s = {ratio:.1%}; p99 {r['p99_ms']:.3f} vs {c['p99_ms']:.3f} ms"
                + (f", {r['errors']} HTTP errors" if r["errors"] else "")
                + (f", {c['errors']} bench-store errors" if c["errors"] else ""))
    def skip(scenario):
        return BACKENDS[store]().skipped(scenario) if scenario in SCENARIOS else None
    for small, big, label in (("scale: page 100 msgs", "scale: page 1M msgs", "page read, 1,000,000 vs 100 messages"),
                              ("scale: list 10 convs", "scale: list 100k convs",
                               "conversation list, 100,000 vs 10 conversations")):
        a, b = find(results, store, small, CONNS), find(results, store, big, CONNS)
        what = f"scale: {label} within {SCALE_RATIO:g}x (p50 and p99)"
        if not (a and b):
            add(None, what, skip("scale") or "")
            continue
        r50 = b["p50_ms"] / a["p50_ms"] if a["p50_ms"] else float("inf")
        r99 = b["p99_ms"] / a["p99_ms"] if a["p99_ms"] else float("inf")
        add(r50 <= SCALE_RATIO and r99 <= SCALE_RATIO and a["errors"] == 0 and b["errors"] == 0, what,
            f"p50 {b['p50_ms']:.3f}/{a['p50_ms']:.3f} ms = {r50:.2f}x, "
            f"p99 {b['p99_ms']:.3f}/{a['p99_ms']:.3f} ms = {r99:.2f}x, "
            f"req/s {b['rps']:,.0f} vs {a['rps']:,.0f}")
    mem = next((r for r in results if r["store"] == store and r["group"] == "memory"), None)
    what = f"memory: RssAnon < {IDLE_ANON_MIB:g} MiB with {KNOBS['BENCH_IDLE_CONNECTIONS']:,} idle connections"
    if not mem or "server" not in mem:
        add(None, what, skip("memory") or "")
    else:
        anon = mem["server"].get("RssAnon", 0)
        add(anon < IDLE_ANON_MIB and "failed" not in mem, what,
            f"RssAnon {anon:.1f} MiB held ({mem['server_before'].get('RssAnon', 0):.1f} before, "
            f"{(mem.get('server_after') or {}).get('RssAnon', 0):.1f} after closing)"
            + (f"; {mem['failed']}" if "failed" in mem else ""))
    return out


def plot(results, png, work):
    """Throughput and p99 against connections for the sweep scenarios."""
    series = []
    for store in KNOBS["STORES"]:
        for scen in ("health", "page read"):
            pts = sorted((r["connections"], r["rps"], r["p99_ms"]) for r in results
                         if r["store"] == store and r["scenario"] == scen and r["group"] == "sweep"
                         and "failed" not in r)
            if pts:
                f = work / f"plot-{store}-{scen.replace(' ', '_')}.dat"
                write_lines(f, [f"{c} {rps} {p99}" for c, rps, p99 in pts])
                series.append((f, f"{scen} ({store})"))
    if not series or not shutil.which("gnuplot"):
        log("no plot: no sweep data or gnuplot is missing")
        return False
    terms = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True).stderr
    term = "pngcairo size 1400,560 font ',11'" if "pngcairo" in terms else "png size 1400,560"
    rps_plot = ", ".join(f"'{f}' using 1:2 with linespoints lw 2 title '{t}'" for f, t in series)
    p99_plot = ", ".join(f"'{f}' using 1:3 with linespoints lw 2 title '{t}'" for f, t in series)
    script = f"""
set terminal {term}
set output '{png}'
set multiplot layout 1,2 title 'messenger: throughput and p99 latency against connections (wrk on the same machine)'
set logscale x 2
set xlabel 'connections'
set grid
set key top left
set format y '%.0f'
set ylabel 'requests/s'
set title 'throughput'
set yrange [0:*]
plot {rps_plot}
set yrange [*:*]
set title 'p99 latency'
set ylabel 'p99 (ms)'
set format y '%g'
set logscale y
plot {p99_plot}
unset multiplot
"""
    sp = work / "plot.gp"
    sp.write_text(script)
    p = subprocess.run(["gnuplot", str(sp)], capture_output=True, text=True)
    if p.returncode != 0:
        log(f"gnuplot failed: {p.stderr.strip()}")
        return False
    return True


# ------------------------------------------------------------------ main

NOTES = []   # printed under the table and kept in the JSON ("notes")


def note(msg):
    NOTES.append(msg)
    log(msg)


def bench_store(store, results, datasets, work, rng):
    backend = BACKENDS[store]()
    backend.ensure_up()
    try:
        bench_store_on(backend, store, results, datasets, work, rng)
    finally:
        backend.shutdown()


def bench_store_on(backend, store, results, datasets, work, rng):
    users, convs, msgs = backend.main_size()
    main_params = ["--users", users, "--conversations", convs, "--messages", msgs]
    main_wanted = SCENARIOS & {"health", "page", "list", "send", "mixed", "memory"}
    if main_wanted:
        label = f"u{users}-c{convs}-m{msgs}"
        data_dir, stamp = backend.dataset(label, main_params)
        below = any(x < m for x, m in zip((users, convs, msgs), MIN_DATASET))
        datasets.append({"store": store, "name": "main", "dir": str(data_dir.relative_to(ROOT)),
                         "seed": [str(x) for x in main_params], "size_mib": backend.size_mib(data_dir),
                         "store_args": backend.store_args(data_dir), "below_issue_minimum": below,
                         "earlier_bench_runs": stamp.get("bench_runs", 0),
                         "messages_added_by_earlier_runs": stamp.get("bench_messages_added", 0)})
        if below:
            note(f"[{store}] data set {users:,} users / {convs:,} conversations / {msgs:,} messages is SMALLER than "
                 f"the issue's minimum ({MIN_DATASET[0]:,} / {MIN_DATASET[1]:,} / {MIN_DATASET[2]:,})")
        backend.warm(data_dir)
        srv = Server(backend, data_dir, work / f"server-{store}-main.log").start()
        sends = 0
        try:
            c = Client(srv.port)
            try:
                files = prepare_main(c, work, rng, users, convs)
            except RuntimeError as e:
                if store == "cassandra":
                    raise RuntimeError(f"{e}\n(the keyspace {backend.store_args(data_dir)[-1]} may have been lost "
                                       "while its stamp stayed: BENCH_FRESH=1 seeds it again)") from e
                raise
            c.close()
            if os.path.getsize(files["page_cursor"]) == 0:
                note(f"[{store}] no conversation of the data set has more than 20 messages ({msgs:,} messages in "
                     f"{convs:,} conversations): page reads are first pages only (no cursor pages)")
                files["page_cursor"] = files["page_first"]
            run = Run(store, data_dir, srv, results, exclude=backend.system_pids())
            ceiling = getattr(backend, "ceiling", None)
            page = [(50, files["page_first"]), (50, files["page_cursor"])]
            if ceiling and "page" in SCENARIOS:
                # the page-read scenario's requests, first and cursor pages as mix.lua draws them
                files["page_mix"] = mix_file(work / "page_mix.txt", page)
            health = [(1, files["health"])]
            rounds = max(1, KNOBS["BENCH_RATIO_ROUNDS"])

            def with_health(group, name, pools):
                """The scenario at CONNS, alternating with /health (see
                health_reference): returns its rounds."""
                return run.pair(group, CONNS, (health_reference(name), health), (name, pools), rounds)[name]

            if "health" in SCENARIOS:
                for n in SWEEP:
                    run.scenario("health", "sweep", n, health)
            if "page" in SCENARIOS:
                if ceiling:
                    run.ceiling(backend, "page", CONNS, files["page_mix"])
                for n in SWEEP:
                    if n == CONNS:
                        with_health("sweep", "page read", page)
                    else:
                        run.scenario("page read", "sweep", n, page)
            if "list" in SCENARIOS:
                with_health("main", "conversation list", [(1, files["list"])])
            if SCENARIOS & {"send", "mixed"}:
                backend.note_sending(data_dir)
            if "send" in SCENARIOS:
                for r in with_health("main", "send (durable)", [(1, files["send"])]):
                    sends += r.get("requests", 0) - r.get("errors", 0)
                if ceiling:
                    # its sends land in the data set's conversations too
                    c = run.ceiling(backend, "send", CONNS, files["send"])
                    sends += c.get("requests", 0) + c.get("warmup_ops", 0) - c.get("errors", 0)
            if "mixed" in SCENARIOS:
                r = run.scenario("mixed 90/10", "main", CONNS, [(45, files["page_first"]), (45, files["page_cursor"]),
                                                              (90, files["list"]), (20, files["send"])])
                sends += int(r.get("requests", 0) * 0.1)
            if "memory" in SCENARIOS:
                why = backend.skipped("memory")
                if why:
                    note(why)
                else:
                    memory_scenario(run, KNOBS["BENCH_IDLE_CONNECTIONS"])
        finally:
            srv.stop()
            backend.note_run(data_dir, sends + 1)
        # The request log and the server log stay in the work dir unless the run failed.
        if srv.proc.returncode not in (0, None):
            raise RuntimeError(f"the server exited with {srv.proc.returncode}")

    if "scale" in SCENARIOS and backend.skipped("scale"):
        note(backend.skipped("scale"))
    elif "scale" in SCENARIOS:
        params = ["--users", KNOBS["BENCH_HUB"] + 1, "--conversations", 0, "--messages", 0,
                  "--hub-conversations", KNOBS["BENCH_HUB"], "--long-conversation", KNOBS["BENCH_LONG"]]
        data_dir, stamp = backend.dataset(f"scale-h{KNOBS['BENCH_HUB']}-l{KNOBS['BENCH_LONG']}", params,
                                          prepare=lambda d: scale_extras(backend, d, work))
        datasets.append({"store": store, "name": "scale", "dir": str(data_dir.relative_to(ROOT)),
                         "seed": [str(x) for x in params] + ["+ over HTTP: 100 messages between bench_small_a "
                                                             "and bench_small_b; bench_fan sends to 10 users"],
                         "size_mib": backend.size_mib(data_dir)})
        backend.warm(data_dir)
        srv = Server(backend, data_dir, work / f"server-{store}-scale.log").start()
        try:
            c = Client(srv.port)
            files = prepare_scale(c, work, stamp["extras"], rng)
            c.close()
            run = Run(store, data_dir, srv, results, exclude=backend.system_pids())
            rounds = max(1, KNOBS["BENCH_SCALE_ROUNDS"])
            run.pair("scale", CONNS,
                     ("scale: page 100 msgs", [(50, files["page_small_first"]), (50, files["page_small_cursor"])]),
                     ("scale: page 1M msgs", [(50, files["page_long_first"]), (50, files["page_long_cursor"])]),
                     rounds)
            run.pair("scale", CONNS, ("scale: list 10 convs", [(1, files["list_small"])]),
                     ("scale: list 100k convs", [(1, files["list_hub"])]), rounds)
        finally:
            srv.stop()


def bench_hot(store):
    """Issue 14's hot conversation (Cassandra only): bench/hot.py on this
    build; its figures go into the notes (printed, and kept in the JSON)."""
    if store != "cassandra":
        return
    args = [sys.executable, str(BENCH / "hot.py"), "--bin", str(BIN), "--sends", str(KNOBS["BENCH_HOT_SENDS"]),
            "--duration", f"{DURATION:g}"]
    log(f"hot scenario: {' '.join(args)}")
    p = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    m = re.search(r"^BENCH_HOT (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        note(f"hot scenario failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
        return
    for line in p.stdout.splitlines():
        if line.startswith(("list ", "hot sends", "trace ")):
            note("hot: " + line)
    note("hot: BENCH_HOT " + m.group(1))


def main():
    if not BIN.exists():
        sys.exit(f"bench: {BIN} is missing; run bench/run.sh (it builds it)")
    for s in KNOBS["STORES"]:
        if s not in BACKENDS:
            sys.exit(f"bench: store {s!r} has no benchmark backend yet (known: {', '.join(BACKENDS)}); "
                     "add a class to BACKENDS in bench/bench.py")
    if "health" not in SCENARIOS and SCENARIOS & {"page", "list", "send"}:
        log("note: without the health scenario the ratio targets cannot be checked")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    machine = machine_info()
    soft, hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)
    log(f"{machine['messenger']} on {machine['nproc']} x {machine['cpu_model']}, kernel {machine['kernel']}; "
        f"{DURATION:g} s per scenario after {WARMUP:g} s warm-up; open-file limit {soft}")
    busy = busy_processes()
    machine["loadavg_at_start"] = open("/proc/loadavg").read().split()[:3]
    machine["busy_processes_at_start"] = busy
    if busy:
        log("WARNING: other processes are using CPU, the numbers will be noisy: " +
            ", ".join(f"{b['comm']} (pid {b['pid']}) {b['cpu_percent']}%" for b in busy))
    work = Path(tempfile.mkdtemp(prefix="messenger-bench-"))
    rng = random.Random(20240101)
    results, datasets = [], []
    ok = False
    try:
        for store in KNOBS["STORES"]:
            bench_store(store, results, datasets, work, rng)
            if "hot" in SCENARIOS:
                bench_hot(store)
        ok = True
    finally:
        if not ok:
            log(f"run failed; request files and server logs kept in {work}")
    # Summary.
    lines = ["", HEADER] + [fmt_row(r) for r in results]
    for d in datasets:
        lines.append(f"data set [{d['store']}] {d['name']}: seed {' '.join(d['seed'][:10])}"
                     + (f" ({d['store_args'][-1]})" if d["store"] == "cassandra" and d.get("store_args") else "")
                     + ("  << SMALLER THAN THE ISSUE'S MINIMUM" if d.get("below_issue_minimum") else ""))
    if "cassandra" in KNOBS["STORES"]:
        lines.append("[cassandra] /health queries the store (store_health: a CQL request), so on Cassandra it is not "
                     "the HTTP ceiling; the /health-ratio targets are informational there")
    if any(r["group"] == "ceiling" for r in results):
        lines.append("store ceiling rows: `messenger-bench-store --requests` (the store alone, no HTTP, the same CQL "
                     "statements) on the same keyspace and the same request files as the HTTP page-read and send "
                     "scenarios, same concurrency and duration; latencies from its own clock")
    lines += [f"note: {n}" for n in NOTES]
    tg = [t for s in KNOBS["STORES"] for t in targets(results, s)]
    lines += ["", f"Targets ({CONNS} connections, wrk -t{KNOBS['BENCH_WRK_THREADS']} on the same "
                  f"{machine['nproc']}-core machine, {DURATION:g} s per scenario):"]
    for t in tg:
        lines.append(f"  {t['status']:<12} [{t['store']}] {t['target']}" + (f": {t['detail']}" if t["detail"] else ""))
    elapsed = time.monotonic() - started
    lines.append(f"\n{len(results)} measurements in {elapsed:.0f} s; machine: {machine['nproc']} x "
                 f"{machine['cpu_model']}, kernel {machine['kernel']}, {machine['memory']}")
    if busy:
        lines.append("WARNING: other processes used CPU when the run started (noisy numbers): " +
                     ", ".join(f"{b['comm']} {b['cpu_percent']}%" for b in busy))
    png = RESULTS / f"bench-{stamp}.png"
    have_png = plot(results, png, work)
    out_json = RESULTS / f"bench-{stamp}.json"
    out_txt = RESULTS / f"bench-{stamp}.txt"
    lines.append(f"results: {out_json.relative_to(ROOT)}" + (f", plot: {png.relative_to(ROOT)}" if have_png else ""))
    text = "\n".join(lines)
    print(text, flush=True)
    doc = {"started": stamp, "elapsed_s": round(elapsed, 1), "command": " ".join(["bash", "bench/run.sh"] + sys.argv[1:]),
           "knobs": KNOBS, "machine": machine, "open_file_limit": soft, "datasets": datasets,
           "results": results, "targets": tg, "notes": NOTES, "plot": png.name if have_png else None}
    out_json.write_text(json.dumps(doc, indent=1) + "\n")
    out_txt.write_text(text.lstrip("\n") + "\n")
    shutil.copyfile(out_json, RESULTS / "latest.json")
    shutil.copyfile(out_txt, RESULTS / "latest.txt")
    if have_png:
        shutil.copyfile(png, RESULTS / "latest.png")
    shutil.rmtree(work, ignore_errors=True)
    if KNOBS["BENCH_STRICT"] and any(t["status"] == "FALLS SHORT" for t in tg):
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
