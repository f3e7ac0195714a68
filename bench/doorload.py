"""The door's load generator: send, then fetch, the same documents through one API.

``--api http``: ``POST /v1/envelopes`` as the sender (bearer token), then
``GET /v1/inbox/{id}`` as the recipient.  ``--api door``: ``POST
/vxp/sendEdoc`` signed as the sender's system (the SDK's headers, a fresh
timestamp per call, the file + CRLF), then ``POST /vxp/getEdoc`` signed as
the recipient's, its ``data`` decoded.  Both check every fetched document
against the bytes sent.  Closed loop at ``--concurrency``, on the keep-alive
client of ``bench.load`` (no ``Expect: 100-continue``: the Java SDK's extra
round trip is the client's cost, not the hub's).

Prints one JSON object: for ``send`` and ``get`` each, the throughput (steady
state: the first tenth of completions left out), p50/p99 latency, answers
by status, and the CPU of the hub (``--server-pid``) and of this process
over that half (on a 2-core machine the client's signing and decoding take
CPU from the hub: compare the hub's CPU per document too).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from bench.common import percentile, read_pool, token_for
from bench.load import Client
from bench.run import cpu_seconds

_TO = re.compile(rb"<edXML:To><edXML:OrganId>([^<]+)</edXML:OrganId>")


def _headers(pairs: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in pairs.items()).encode("utf-8")


class Api:
    """What one request of each half sends, for one API."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ident = Path(args.ident)
        if args.api == "door":
            from hub.door.credentials import credentials_path, read_credentials
            self.secrets = {c.system_id: c.secret for c in
                            read_credentials(credentials_path(Path(args.data))).values()}
        self._tokens: dict[str, bytes] = {}

    def token(self, organ: str) -> bytes:
        if organ not in self._tokens:
            self._tokens[organ] = f"Authorization: Bearer {token_for(self.ident, organ)}\r\n".encode()
        return self._tokens[organ]

    def signed(self, organ: str, content_type: str, caller: list[tuple[str, str]],
               file: bytes | None = None) -> bytes:
        from datetime import datetime

        from hub.vxp.protocol import VN_TZ, format_timestamp, hash_file, sign_headers
        pairs = [("timestamp", format_timestamp(datetime.now(VN_TZ))), ("systemid", organ),
                 ("Content-Type", content_type), *caller]
        if file is not None:
            pairs.append(("hash-file", hash_file(file)))
        return _headers(sign_headers(pairs, self.secrets[organ]))

    async def send(self, http: Client, sender: str, raw: bytes) -> tuple[int, str | None]:
        if self.args.api == "http":
            code, body = await http.request("POST", "/v1/envelopes", self.token(sender) +
                                            b"Content-Type: application/xml\r\n", raw)
            return code, json.loads(body).get("id") if code in (200, 202) else None
        headers = self.signed(sender, "application/octet-stream",
                              [("from", sender), ("servicetype", "eDoc"), ("messagetype", "edoc")],
                              raw)
        code, body = await http.request("POST", "/vxp/sendEdoc", headers, raw + b"\r\n")
        answer = json.loads(body)
        return (code, answer["DocId"]) if answer.get("status") == "OK" else (code, None)

    async def get(self, http: Client, recipient: str, doc_id: str) -> tuple[int, bytes | None]:
        if self.args.api == "http":
            code, body = await http.request("GET", f"/v1/inbox/{doc_id}", self.token(recipient))
            return code, body if code == 200 else None
        headers = self.signed(recipient, "application/json",
                              [("filePath", "xml"), ("docId", doc_id)])
        code, body = await http.request("POST", "/vxp/getEdoc", headers, b"{}")
        answer = json.loads(body)
        if answer.get("status") != "OK":
            return code, None
        return code, base64.b64decode(answer["data"])


async def _closed_loop(jobs: list[Any], concurrency: int,
                       one: Callable[[Any], Awaitable[tuple[int, bool]]],
                       server_pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    done_at: list[float] = []
    codes: dict[str, int] = {}
    ok = 0
    it = iter(jobs)
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    client0 = _own_cpu()
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal ok
        for job in it:
            start = time.perf_counter()
            try:
                code, good = await one(job)
            except (OSError, ValueError, KeyError, asyncio.IncompleteReadError) as exc:
                code, good = type(exc).__name__, False  # type: ignore[assignment]
            end = time.perf_counter()
            codes[str(code)] = codes.get(str(code), 0) + 1
            ok += good
            latencies.append(end - start)
            done_at.append(end)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    t1 = time.perf_counter()
    server = (cpu_seconds(server_pid) - cpu0) if server_pid else 0.0
    client = _own_cpu() - client0
    n = len(latencies)
    warm = min(n // 10, 64)
    order = sorted(range(n), key=lambda i: done_at[i])
    steady = [latencies[i] for i in order[warm:]]
    span = done_at[order[-1]] - done_at[order[warm - 1]] if warm > 0 and n > warm + 1 else t1 - t0
    return {"sent": n, "ok": ok, "codes": codes, "seconds": t1 - t0,
            "throughput": len(steady) / span if span > 0 else None,
            "p50_ms": percentile(steady, 50) * 1e3, "p99_ms": percentile(steady, 99) * 1e3,
            "server_cores": server / (t1 - t0) if t1 > t0 else None,
            "server_cpu_ms_per_doc": server / max(1, n) * 1e3,
            "client_cores": client / (t1 - t0) if t1 > t0 else None,
            "client_cpu_ms_per_doc": client / max(1, n) * 1e3}


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pool = read_pool(Path(args.pool), args.skip + args.count)[args.skip:]
    api = Api(args)
    http = Client(args.url)
    sent: list[tuple[str, str, bytes]] = []   # (recipient, message id, bytes)
    try:
        async def send(job: tuple[str, bytes]) -> tuple[int, bool]:
            sender, raw = job
            code, doc_id = await api.send(http, sender, raw)
            if doc_id is not None:
                match = _TO.search(raw)
                assert match is not None
                sent.append((match.group(1).decode(), doc_id, raw))
            return code, doc_id is not None

        async def get(job: tuple[str, str, bytes]) -> tuple[int, bool]:
            recipient, doc_id, raw = job
            code, body = await api.get(http, recipient, doc_id)
            return code, body == raw

        send_res = await _closed_loop(pool, args.concurrency, send, args.server_pid)
        get_res = await _closed_loop(list(sent), args.concurrency, get, args.server_pid)
    finally:
        http.close()
    return {"api": args.api, "send": send_res, "get": get_res, "client_cpu_s": _own_cpu()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--api", choices=("http", "door"), required=True)
    p.add_argument("--ident", required=True, help="the run's identity dir (token secret)")
    p.add_argument("--data", required=True, help="the hub's data dir (door credentials)")
    p.add_argument("--pool", required=True)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--server-pid", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
