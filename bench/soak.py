"""``make soak``: mixed two-way traffic for a long while at 80 % of the measured capacity.

One run, by itself, in three parts:

1. **Capacity** (``--capacity-seconds``, 20 s): the same mixed traffic as the
   soak, closed loop — at most ``--concurrency`` documents are in their cycle
   at once, a cycle being: a commune (or an office) submits a document to an
   office (or a commune) through the mailbox, a quarter of them also to a
   peer district (a push route to ``bench.peer``, which answers each with a
   status 01 through the hub); the recipient lists its inbox, fetches,
   acknowledges and answers with a status 03, which the sender fetches and
   acknowledges too.  Capacity is the number of cycles completed per second
   after a short warm-up.
2. **Soak** (``SOAK_SECONDS``, default 600): open loop at ``--load`` (0.8) of
   that capacity — documents are sent on a schedule whatever the answers,
   so a hub that slows down cannot hide it — while the consumers keep up.
   The hub's RSS is sampled every few seconds; one JSON line per
   ``--interval`` reports rate, answers, latency, backlog and RSS.
3. **Drain**: sending stops; every document must complete its cycle within
   ``--drain-seconds``.

Pass: no error response (anything but 200/202 for submissions and 200 for
reads and acks, or a client error) in the whole run, the backlog drained,
and the hub's RSS at the end within ``--rss-growth`` (10 %) of its RSS at the
end of the warm-up (``--warmup-seconds``, the first tenth by default).  The
last JSON line is the summary (``"name": "soak.summary"``); exit status 0
when it passed.  The hub runs with ``cpu_workers = 0``: its RSS is then the
whole hub (worker processes would hold part of it).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (COMMUNES, OFFICES, PEER_ORGAN, PEER_ROUTE, PYTHON, Child, Hub,
                          emit, free_port, http_get, make_identity, note, percentile, token_for)
from bench.load import Client
from hub.edxml import samples

DOC_SIZE = 3000
PEER_SHARE = 0.25        #: documents that also go to the peer district (push route)
POLL = 0.1               #: a consumer's pause when its inbox was empty
RSS_EVERY = 5.0


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work or tempfile.mkdtemp(prefix="lienthong-soak-"))
        self.ident = make_identity(self.work)
        self.http: Client | None = None
        self.headers: dict[str, bytes] = {}
        self.number = 0
        #: document id → monotonic time it was (scheduled to be) sent
        self.open: dict[str, float] = {}
        self.cycles: list[float] = []            #: completion times (monotonic)
        self.latency: list[tuple[float, float]] = []   #: (done at, cycle seconds)
        self.submit_ms: list[tuple[float, float]] = []
        #: every interval's latencies, for the summary's percentiles over the whole soak
        self.soak_cycle_s: list[float] = []
        self.soak_submit_ms: list[float] = []
        self.codes: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.sent = 0
        self.statuses = 0
        self.consuming = True
        self.slots: asyncio.Semaphore | None = None
        self.rss: list[tuple[float, int]] = []

    # -- HTTP ------------------------------------------------------------------------

    def auth(self, organ: str, xml: bool = False) -> bytes:
        key = f"{organ}:{xml}"
        if key not in self.headers:
            line = f"Authorization: Bearer {token_for(self.ident, organ)}\r\n"
            self.headers[key] = (line + ("Content-Type: application/xml\r\n" if xml else "")).encode()
        return self.headers[key]

    async def call(self, what: str, method: str, path: str, organ: str, body: bytes = b"",
                   ok: tuple[int, ...] = (200,)) -> tuple[int, bytes] | None:
        assert self.http is not None
        try:
            async with asyncio.timeout(self.args.timeout):
                code, answer = await self.http.request(method, path, self.auth(organ, bool(body)),
                                                       body)
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
            self.fail(f"{what}: {type(exc).__name__}: {exc}", type(exc).__name__)
            return None
        self.codes[f"{what} {code}"] += 1
        if code not in ok:
            self.fail(f"{what}: HTTP {code}: {answer[:200].decode(errors='replace')}", str(code))
            return None
        return code, answer

    def fail(self, text: str, code: str) -> None:
        self.codes[f"error {code}"] += 1
        if len(self.errors) < 20:
            self.errors.append(text)

    @property
    def error_count(self) -> int:
        return sum(n for k, n in self.codes.items() if k.startswith("error "))

    # -- the traffic -------------------------------------------------------------------

    def next_doc(self) -> tuple[str, str, bytes]:
        self.number += 1
        n = self.number
        if n % 3 == 0:  # offices write to communes too: two-way
            sender, recipient = OFFICES[n % len(OFFICES)], COMMUNES[(n // 3) % len(COMMUNES)]
        else:
            sender, recipient = COMMUNES[n % len(COMMUNES)], OFFICES[(n // 2) % len(OFFICES)]
        recipients = [recipient]
        if (n * 7919) % 100 < PEER_SHARE * 100:
            recipients.append(PEER_ORGAN)
        raw = samples.edoc(sender, recipients, n, size=DOC_SIZE, notation=self.args.notation)
        return sender, f"{sender},2026/11/20,{n}/{self.args.notation}", raw

    async def send_one(self, scheduled: float) -> None:
        sender, doc_id, raw = self.next_doc()
        self.open[doc_id] = scheduled
        self.sent += 1
        if await self.call("submit", "POST", "/v1/envelopes", sender, raw, (202,)) is None:
            self.open.pop(doc_id, None)
            self.release()
        now = time.monotonic()
        self.submit_ms.append((now, (now - scheduled) * 1e3))

    def release(self) -> None:
        if self.slots is not None:
            self.slots.release()

    async def consumer(self, organ: str) -> None:
        cursor = 0
        while self.consuming:
            res = await self.call("inbox", "GET", f"/v1/inbox?after={cursor}&limit=100", organ)
            if res is None:
                await asyncio.sleep(POLL)
                continue
            items = json.loads(res[1])["items"]
            for item in items:
                cursor = max(cursor, item["cursor"])
                await self.take(organ, item)
            if not items:
                await asyncio.sleep(POLL)

    async def take(self, organ: str, item: dict[str, Any]) -> None:
        mid = item["id"]
        if await self.call("fetch", "GET", f"/v1/inbox/{mid}", organ) is None:
            return
        if item["kind"] == "edoc":
            reply = samples.status(organ, item["sender"], item["document_id"], "03",
                                   description="Đã tiếp nhận")
            if await self.call("status", "POST", "/v1/envelopes", organ, reply, (202,)) is None:
                return
            self.statuses += 1
        if await self.call("ack", "POST", f"/v1/inbox/{mid}/ack", organ) is None:
            return
        if item["kind"] == "status" and item["status_code"] == "03":
            started = self.open.pop(item["document_id"], None)
            if started is not None:  # its cycle is complete
                now = time.monotonic()
                self.cycles.append(now)
                self.latency.append((now, now - started))
                self.release()

    # -- the parts -------------------------------------------------------------------

    async def closed_loop(self, seconds: float) -> float:
        """Cycles per second with at most ``concurrency`` documents in their cycle."""
        self.slots = asyncio.Semaphore(self.args.concurrency)
        t0 = time.monotonic()
        end = t0 + seconds

        async def sender() -> None:
            assert self.slots is not None
            while time.monotonic() < end:
                await self.slots.acquire()
                await self.send_one(time.monotonic())

        await asyncio.gather(*(sender() for _ in range(self.args.concurrency)))
        warm = t0 + min(5.0, seconds / 4)
        done = [t for t in self.cycles if warm <= t <= end]
        self.slots = None
        return len(done) / max(1e-9, end - warm)

    async def open_loop(self, rate: float, seconds: float, hub: Hub) -> list[dict[str, Any]]:
        t0 = time.monotonic()
        end = t0 + seconds
        warm_end = t0 + self.args.warmup_seconds
        lines: list[dict[str, Any]] = []
        tasks: set[asyncio.Task[None]] = set()
        next_report = t0 + self.args.interval
        next_rss = t0
        i = 0
        last = {"sent": self.sent, "cycles": len(self.cycles), "at": t0}
        while True:
            now = time.monotonic()
            if now >= next_rss:
                self.rss.append((now - t0, hub.rss()[0]))
                next_rss += RSS_EVERY
            if now >= next_report or now >= end:
                lines.append(self.report(t0, last, hub, now < warm_end))
                last = {"sent": self.sent, "cycles": len(self.cycles), "at": now}
                next_report += self.args.interval
            if now >= end:
                break
            at = t0 + i / rate
            if at > now:
                await asyncio.sleep(min(at - now, 0.05))
                continue
            task = asyncio.create_task(self.send_one(at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)
        return lines

    def report(self, t0: float, last: dict[str, Any], hub: Hub, warming: bool) -> dict[str, Any]:
        now = time.monotonic()
        span = max(1e-9, now - last["at"])
        window = [s for t, s in self.latency if t >= last["at"]]
        submits = [ms for t, ms in self.submit_ms if t >= last["at"]]
        self.soak_cycle_s.extend(window)
        self.soak_submit_ms.extend(submits)
        self.latency = [x for x in self.latency if x[0] >= last["at"]]
        self.submit_ms = [x for x in self.submit_ms if x[0] >= last["at"]]
        return emit("soak.interval", {"t": round(now - t0, 1), "warm_up": warming},
                    round((len(self.cycles) - last["cycles"]) / span, 1), "cycles/s",
                    sent_per_s=round((self.sent - last["sent"]) / span, 1),
                    backlog=len(self.open), errors=self.error_count,
                    submit_p50_ms=round(percentile(submits, 50), 1),
                    submit_p99_ms=round(percentile(submits, 99), 1),
                    cycle_p50_s=round(percentile(window, 50), 3),
                    cycle_p99_s=round(percentile(window, 99), 3),
                    hub_rss_mb=round(hub.rss()[0] / 2**20, 1))

    async def drain(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.open and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return not self.open

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> int:
        a = self.args
        port = free_port()
        hub = Hub(self.work, "soak", self.ident, config=(
            "rate_limit_per_address = 0\nrate_limit_per_identity = 0\ncpu_workers = 0\n"
            f'[adapters."{PEER_ROUTE}"]\nclass = "edxml_http"\n'
            f'url = "http://127.0.0.1:{port}/edxml"\n'))
        hub.start()
        peer = Child([PYTHON, "-m", "bench.peer", "--port", str(port), "--organ", PEER_ORGAN,
                      "--status-back", "--hub", hub.base, "--ident", str(self.ident)],
                     self.work / "soak" / "peer.log")
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if http_get(f"http://127.0.0.1:{port}/stats", 1.0)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the fake peer did not start")
                await asyncio.sleep(0.05)
            self.http = Client(hub.base)
            consumers = [asyncio.create_task(self.consumer(o)) for o in (*COMMUNES, *OFFICES)]
            note(f"soak: measuring capacity for {a.capacity_seconds:.0f} s "
                 f"(closed loop, {a.concurrency} cycles in flight)")
            capacity = await self.closed_loop(a.capacity_seconds)
            emit("soak.capacity", {"seconds": a.capacity_seconds, "concurrency": a.concurrency},
                 round(capacity, 1), "cycles/s", errors=self.error_count)
            if not await self.drain(a.drain_seconds):
                note(f"soak: {len(self.open)} cycles of the capacity run never completed")
            rate = capacity * a.load
            note(f"soak: {a.seconds:.0f} s at {rate:.1f} documents/s ({a.load:.0%} of capacity)")
            errors_before = self.error_count
            self.cycles.clear()
            sent0 = self.sent
            t_soak = time.monotonic()
            lines = await self.open_loop(rate, a.seconds, hub)
            soak_seconds = time.monotonic() - t_soak
            drained = await self.drain(a.drain_seconds)
            self.consuming = False
            await asyncio.gather(*consumers, return_exceptions=True)
            peer_stats = json.loads(http_get(f"http://127.0.0.1:{port}/stats", 5.0)[1])
        finally:
            if self.http is not None:
                self.http.close()
            hub_rc = hub.stop()
            peer.kill()
        warm = [r for t, r in self.rss if t <= a.warmup_seconds]
        rss_warm = warm[-1] if warm else self.rss[0][1]
        rss_end = self.rss[-1][1]
        growth = (rss_end - rss_warm) / rss_warm
        cycles = len(self.cycles)
        ok = (self.error_count == 0 and drained and growth < a.rss_growth and hub_rc == 0)
        emit("soak.summary", {"seconds": a.seconds, "load": a.load, "capacity_seconds":
                              a.capacity_seconds},
             round(cycles / max(1e-9, soak_seconds), 1), "cycles/s", f">= {a.load:.0%} of capacity",
             ok, capacity_cycles_per_s=round(capacity, 1), offered_docs_per_s=round(rate, 1),
             documents=self.sent - sent0, cycles_completed=cycles, drained=drained,
             statuses_03_all_parts=self.statuses, errors=self.error_count,
             errors_in_capacity_run=errors_before, first_errors=self.errors[:5],
             submit_p50_ms=round(percentile(self.soak_submit_ms, 50), 1),
             submit_p99_ms=round(percentile(self.soak_submit_ms, 99), 1),
             cycle_p50_s=round(percentile(self.soak_cycle_s, 50), 3),
             cycle_p99_s=round(percentile(self.soak_cycle_s, 99), 3),
             hub_rss_mb={"end_of_warm_up": round(rss_warm / 2**20, 1),
                         "end": round(rss_end / 2**20, 1),
                         "max": round(max(r for _t, r in self.rss) / 2**20, 1)},
             rss_growth=round(growth, 4), peer_received=peer_stats["received"],
             peer_statuses=peer_stats["status_codes"], hub_exit=hub_rc,
             intervals=len(lines), work=str(self.work))
        print(f"\nsoak {'PASSED' if ok else 'FAILED'}: {a.seconds:.0f} s at {rate:.1f} docs/s "
              f"({a.load:.0%} of {capacity:.1f} cycles/s), {cycles} cycles, "
              f"{self.error_count} errors, RSS {rss_warm / 2**20:.1f} → {rss_end / 2**20:.1f} MiB "
              f"({growth:+.1%}), drained: {drained}", flush=True)
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    p.add_argument("--capacity-seconds", type=float, default=20.0)
    p.add_argument("--warmup-seconds", type=float, default=None,
                   help="RSS baseline taken at the end of this (default: a tenth of --seconds)")
    p.add_argument("--load", type=float, default=0.8, help="share of the measured capacity")
    p.add_argument("--concurrency", type=int, default=32, help="cycles in flight when measuring")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between JSON lines")
    p.add_argument("--drain-seconds", type=float, default=60.0)
    p.add_argument("--rss-growth", type=float, default=0.10)
    p.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    p.add_argument("--notation", default=f"S{int(time.time()) % 100000}",
                   help="the documents' notation (unique per run)")
    p.add_argument("--work", default="", help="working directory (default: a new temporary one)")
    args = p.parse_args(argv)
    if args.warmup_seconds is None:
        args.warmup_seconds = max(10.0, args.seconds / 10)
    if not re.fullmatch(r"[A-Za-z0-9]+", args.notation):
        p.error("--notation: letters and digits")
    return asyncio.run(Soak(args).run())


if __name__ == "__main__":
    sys.exit(main())
