#!/usr/bin/env python3
"""idle_conns.py - open many idle keep-alive connections and hold them.

    python3 bench/idle_conns.py --port PORT [--host 127.0.0.1] [--count 10000]
                                [--concurrency 256] [--hold-timeout 120]

Opens --count connections to the server, sends one `GET /health` on each
and reads its response, so that every connection has completed a request
and sits idle in keep-alive. Then it prints one JSON line on stdout:

    {"event": "holding", "open": N, "failed": F, "open_seconds": S}

and holds all of them open until a line arrives on stdin (or --hold-timeout
seconds pass), then closes them and prints {"event": "closed", ...}.
bench.py reads the server's RssAnon while the connections are held.
Python standard library only.
"""
import argparse
import asyncio
import json
import resource
import sys
import time

REQUEST = b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n"


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))  # root may raise hard
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def one(host, port, sem, timeout):
    """Connects, does one request, returns the open (reader, writer)."""
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            writer.write(REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout)
            if status != 200:
                raise RuntimeError(f"status {status}")
            if b"connection: close" in head.lower():
                raise RuntimeError("server closed the connection")
        except BaseException:
            writer.close()
            raise
        return reader, writer


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--hold-timeout", type=float, default=120.0)
    args = ap.parse_args()

    limit = raise_nofile(args.count + 256)
    if limit < args.count + 64:
        print(json.dumps({"event": "error", "detail": f"RLIMIT_NOFILE is {limit}, too low"}), flush=True)
        return 2

    sem = asyncio.Semaphore(args.concurrency)
    t0 = time.monotonic()
    results = await asyncio.gather(*(one(args.host, args.port, sem, 30.0) for _ in range(args.count)),
                                   return_exceptions=True)
    conns = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    first_error = repr(errors[0]) if errors else None
    print(json.dumps({"event": "holding", "open": len(conns), "failed": len(errors),
                      "first_error": first_error, "open_seconds": round(time.monotonic() - t0, 2)}),
          flush=True)

    # Hold until bench.py says so (a line on stdin) or the time is up.
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.hold_timeout)
    except asyncio.TimeoutError:
        pass

    # Check that the server did not drop them meanwhile: a closed connection
    # reads EOF at once.
    dropped = 0
    for reader, _ in conns:
        if reader.at_eof() or reader.exception() is not None:
            dropped += 1
    for _, writer in conns:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    print(json.dumps({"event": "closed", "closed": len(conns), "dropped_while_held": dropped}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
