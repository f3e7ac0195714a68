"""The load generator: a separate process that POSTs pre-signed envelopes to the hub.

Closed loop (``--concurrency N``): N workers, each sending its next document
as soon as the previous one is answered — the most the hub can take.
Open loop (``--rate R``): one request every 1/R seconds whatever the
answers; latency is counted from the *scheduled* send time, so a stalled
hub cannot hide its queueing (no coordinated omission).

The HTTP client is a minimal keep-alive HTTP/1.1 one on asyncio streams,
not aiohttp's: on a 2-core machine the load generator's CPU is taken from
the hub, and aiohttp's client costs about three times as much per request.

Documents come from a pool file written by ``bench.run`` before any timing
(``bench.common.write_pool``): signed by their senders, each with its own
DocumentId, so every request is new work (a duplicate would be answered
200 without it).  Prints one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import percentile, read_pool, token_for

#: An idle connection older than this is dropped rather than reused: the hub
#: closes keep-alive connections after ``idle_timeout`` (30 s by default), and a
#: request written on one it has just closed would fail for no fault of the hub.
IDLE_REUSE = 10.0


class _Stale(ConnectionError):
    """A connection the server had closed before it read the request."""


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()


class Client:
    """Keep-alive HTTP/1.1 requests over a pool of connections (one per task in flight)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.idle: list[_Connection] = []

    async def post(self, headers: bytes, body: bytes) -> tuple[int, bytes]:
        return await self.request("POST", self.path, headers, body)

    async def request(self, method: str, path: str, headers: bytes,
                      body: bytes = b"") -> tuple[int, bytes]:
        """One request on an idle connection (or a new one); (status, body).

        A reused connection that the server had closed (nothing at all comes
        back) is replaced by a new one and the request written again, once:
        the server never read it, so this sends nothing twice."""
        conn = self._idle_connection()
        if conn is not None:
            try:
                return await self._exchange(conn, method, path, headers, body)
            except _Stale:
                pass
        conn = _Connection(*await asyncio.open_connection(self.host, self.port))
        return await self._exchange(conn, method, path, headers, body)

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.idle_since < IDLE_REUSE and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def _exchange(self, conn: _Connection, method: str, path: str, headers: bytes,
                        body: bytes) -> tuple[int, bytes]:
        try:
            head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"Content-Length: {len(body)}\r\n").encode() + headers + b"\r\n"
            try:
                conn.writer.writelines((head, body))
                await conn.writer.drain()
                first = await conn.reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                raise _Stale() from exc  # not one byte came back: the request was not read
            status, _, rest = first.partition(b"\r\n")
            code = int(status.split(b" ", 2)[1])
            length, keep = 0, True
            for line in rest.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
                elif name == b"transfer-encoding":
                    raise ValueError("chunked responses are not expected from the hub")
            answer = await conn.reader.readexactly(length) if length else b""
        except BaseException:
            conn.close()
            raise
        if keep:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.close()
        return code, answer

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle = []


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pool = read_pool(Path(args.pool), args.count)
    if args.skip:
        pool = pool[args.skip:]
    tokens = {s: (f"Authorization: Bearer {token_for(Path(args.ident), s)}\r\n"
                  "Content-Type: application/xml\r\n").encode() for s in {s for s, _ in pool}}
    url = f"{args.url}/v1/envelopes"
    latencies: list[float] = []
    done_at: list[float] = []
    codes: dict[int | str, int] = {}
    errors: list[str] = []
    http = Client(url)
    try:

        async def one(sender: str, raw: bytes, scheduled: float | None) -> None:
            headers = tokens[sender]
            start = time.perf_counter()
            try:
                async with asyncio.timeout(args.timeout):
                    code, body = await http.post(headers, raw)
                if code not in (200, 202) and len(errors) < 5:
                    errors.append(body[:300].decode(errors="replace"))
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError) as exc:
                code = type(exc).__name__
                if len(errors) < 5:
                    errors.append(str(exc))
            end = time.perf_counter()
            codes[code] = codes.get(code, 0) + 1
            latencies.append(end - (scheduled if scheduled is not None else start))
            done_at.append(end)

        busy0 = machine_busy()
        t0 = time.perf_counter()
        wall0 = time.time()
        deadline = t0 + args.max_seconds
        if args.rate:
            tasks = []
            for i, (sender, raw) in enumerate(pool):
                at = t0 + i / args.rate
                if at > deadline:
                    break
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(sender, raw, at)))
            await asyncio.gather(*tasks)
        else:
            it = iter(pool)

            async def worker() -> None:
                for sender, raw in it:
                    if time.perf_counter() > deadline:
                        return
                    await one(sender, raw, None)

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        t1 = time.perf_counter()
        busy1 = machine_busy()
    finally:
        http.close()

    n = len(latencies)
    # Steady state: leave out the first completions (connections opening, warm-up),
    # only when there are enough: with few documents per worker every request is warm-up.
    conc = args.concurrency or 1
    warm = min(n // 10, args.warmup) if (args.rate or n >= 5 * conc) else 0
    order = sorted(range(n), key=lambda i: done_at[i])
    steady = [latencies[i] for i in order[warm:]]
    span = done_at[order[-1]] - done_at[order[warm - 1]] if warm > 0 and n > warm + 1 else t1 - t0
    ok = sum(v for k, v in codes.items() if k in (200, 202))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "sent": n, "ok": ok, "codes": {str(k): v for k, v in codes.items()}, "errors": errors,
        "seconds": t1 - t0, "throughput": (len(steady) / span) if span > 0 else None,
        "offered_rate": args.rate or None,
        "p50_ms": percentile(steady, 50) * 1e3, "p90_ms": percentile(steady, 90) * 1e3,
        "p99_ms": percentile(steady, 99) * 1e3, "max_ms": max(steady) * 1e3 if steady else None,
        "wall_start": wall0, "wall_end": wall0 + (t1 - t0),
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
        "machine_busy_cores": (busy1 - busy0) / (t1 - t0),
    }


def machine_busy() -> float:
    """CPU seconds spent by everything on the machine so far (/proc/stat, not idle/iowait)."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--ident", required=True, help="the run's identity dir (token secret)")
    p.add_argument("--pool", required=True)
    p.add_argument("--count", type=int, default=None, help="use at most this many documents")
    p.add_argument("--skip", type=int, default=0, help="start after this many pool documents")
    p.add_argument("--concurrency", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=int, default=64)
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    args = p.parse_args(argv)
    if not (args.concurrency or args.rate):
        p.error("give --concurrency or --rate")
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
