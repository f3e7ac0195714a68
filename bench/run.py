"""``make bench`` / ``make bench-quick``: the hub's performance, measured end to end.

The harness starts every party as its own process on 127.0.0.1 — the hub
(``python -m hub.cli serve`` on a fresh data directory, the embedded SQLite
default), the load generator (``bench.load``), the fake peer hub
(``bench.peer``) and the compute-floor probe (``bench.floor``) — and kills
them all at the end, on error too.  Every phase has a timeout and the whole
run a time budget; a phase that would not fit is reported as skipped.

Phases (see bench/README.md for what each number means):
  floor   (c) in-process CPU cost of one accept, one core
  accept  (a) POST /v1/envelopes: 10 KB, 100 KB, 1 MB at concurrency 1/16/64,
              and p99 latency at a fixed offered rate (open loop)
  e2e     (b) accept → hop-signed push to the peer → status back → relayed
  depth   (d) accept and dispatch with 0 / 100k / 1M deliveries queued; start time
  big     (e) one 100 MB envelope accepted and relayed; the server's peak RSS
  door    the national-SDK door: sendEdoc and getEdoc beside POST /v1/envelopes and
          GET /v1/inbox/{id}, on one hub, alternating, in the same run
  peer_hub  a second real hub (peer_hub adapters both ways, README "Peer districts")
          beside edxml_http to the fake peer, same documents, same run (bench/axis.py)
  provincial  the provincial adapter against the fake VXP platform (hub.sim.vxp_platform):
          sendEdoc out to a department, documents polled in for a commune

Output: one JSON line per measurement on stdout, progress on stderr, then a
plain table.  ``--json FILE`` also writes every record; ``--markdown FILE``
the table as Markdown (for bench/RESULTS.md).
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import axis, presign
from bench.common import (PEER_ORGAN, PEER_ROUTE, PYTHON, REPO, Child, Hub, describe_tree, emit,
                          free_port, http_get, make_identity, note)

KB, MB = 1000, 1000 * 1000

#: Targets of the issue ("Benchmarks and performance targets"), 2 cores, SQLite.
T_ACCEPT_10K = 800.0        # documents/s at concurrency 64
T_FLOOR_RATIO = 0.60        # accept(10 KB, c64) / compute floor (one core)
T_P99_MS = 50.0             # p99 accept latency at half of T_ACCEPT_10K
T_E2E = 400.0               # documents/s accepted → delivered → status relayed
T_DEPTH_RATIO = 0.80        # throughput at 1M queued vs empty spool
T_START_S = 10.0            # start with 1M queued
T_RSS_FACTOR = 4.0          # peak RSS growth / envelope size


@dataclass
class Profile:
    """How big each phase is: quick (about a minute) or full (under ten)."""

    name: str
    budget: float
    sizes: tuple[int, ...] = (10 * KB, 100 * KB, 1 * MB)
    concurrency: tuple[int, ...] = (1, 16, 64)
    #: (count, max seconds) per size and concurrency class (1, or many)
    cell: dict[tuple[int, bool], tuple[int, float]] = field(default_factory=dict)
    reps_10k_c64: int = 3
    floor_seconds: float = 2.0
    floor_reps: int = 3
    rate_count: int = 2000
    e2e_count: int = 3000
    depths: tuple[int, ...] = (0, 100_000, 1_000_000)
    depth_accept: int = 3000
    dispatch_count: int = 2000
    big_size: int = 100 * MB
    #: documents per API and repetition in the door phase, and the repetitions
    door_count: int = 2000
    door_reps: int = 2
    #: documents per path in the peer_hub phase; out and in in the provincial phase
    peer_count: int = 1500
    prov_count: int = 1500
    prov_in_count: int = 500
    #: open-loop runs of the axis phases: seconds, and the most documents they take
    axis_rate_seconds: float = 4.0
    axis_rate_count: int = 1000


FULL = Profile(
    "full", budget=600.0,
    cell={(10 * KB, False): (4000, 8.0), (10 * KB, True): (800, 5.0),
          (100 * KB, False): (2000, 8.0), (100 * KB, True): (400, 5.0),
          (1 * MB, False): (400, 10.0), (1 * MB, True): (100, 5.0)})
QUICK = Profile(
    "quick", budget=90.0,
    cell={(10 * KB, False): (700, 1.5), (10 * KB, True): (100, 0.8),
          (100 * KB, False): (320, 1.5), (100 * KB, True): (40, 0.8),
          (1 * MB, False): (128, 2.5), (1 * MB, True): (10, 0.8)},
    reps_10k_c64=1, floor_seconds=0.4, floor_reps=2, rate_count=400, e2e_count=400,
    depths=(0, 20_000), depth_accept=640, dispatch_count=300, big_size=10 * MB,
    door_count=300, door_reps=1, peer_count=400, prov_count=300, prov_in_count=150,
    axis_rate_seconds=2.0, axis_rate_count=300)


def fmt_size(n: int) -> str:
    return f"{n // MB} MB" if n >= MB else f"{n // KB} KB"


def machine() -> dict[str, Any]:
    import platform

    from spool.sqlite.bulk import SQLITE_VERSION
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except OSError:
        mem = 0
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem / 2**30, 1),
            "python": platform.python_version(), "sqlite": SQLITE_VERSION,
            "kernel": platform.release()}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads and its live child processes
    (``cpu_workers``), in seconds."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                total += sum(cpu_seconds(int(child)) for child in fh.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


class Bench:
    def __init__(self, args: argparse.Namespace, profile: Profile) -> None:
        self.args = args
        self.p = profile
        self.t0 = time.monotonic()
        self.records: list[dict[str, Any]] = []
        self.children: list[Any] = []
        self.work = Path(args.work or tempfile.mkdtemp(prefix="lienthong-bench-"))
        self.cache = Path(args.cache)
        self.ident = make_identity(self.cache)
        os.environ["BENCH_IDENT"] = str(self.ident)
        self.floor: dict[int, float] = {}
        self.accept_c64: dict[int, float] = {}
        self.server_cwd = Path(args.server_tree).resolve() if args.server_tree else None
        self.tree = self.server_cwd or REPO
        #: the peer_hub phase's edxml_http → fake peer flow, for the provincial comparison
        self.axis_baseline: dict[str, Any] | None = None
        #: the offered rate of the peer_hub phase's open-loop runs (provincial uses it too)
        self.axis_rate: float | None = None

    # -- bookkeeping ------------------------------------------------------------------

    def left(self) -> float:
        return self.p.budget - (time.monotonic() - self.t0)

    def record(self, *a: Any, **kw: Any) -> dict[str, Any]:
        rec = emit(*a, **kw)
        self.records.append(rec)
        return rec

    def hub(self, name: str, config: str = "", data: Path | None = None) -> Hub:
        kwargs = {"cwd": self.server_cwd} if self.server_cwd else {}
        h = Hub(self.work, name, self.ident, config=self.args.hub_config + "\n" + config,
                data=data, **kwargs)
        self.children.append(h)
        return h

    def peer(self, name: str, port: int, hub: Hub | None = None) -> Child:
        """The fake peer on ``port``; with ``hub``, it answers each document with a status."""
        cmd = [PYTHON, "-m", "bench.peer", "--port", str(port), "--organ", PEER_ORGAN]
        if hub is not None:
            cmd += ["--status-back", "--hub", hub.base, "--ident", str(self.ident)]
        child = Child(cmd, self.work / name / "peer.log")
        self.children.append(child)
        deadline = time.monotonic() + 15
        while True:
            try:
                if http_get(f"http://127.0.0.1:{port}/stats", 1.0)[0] == 200:
                    return child
            except OSError:
                pass
            if child.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fake peer did not start: {child.log.read_text()[-2000:]}")
            time.sleep(0.05)

    @staticmethod
    def peer_stats(port: int) -> dict[str, Any]:
        return json.loads(http_get(f"http://127.0.0.1:{port}/stats", 5.0)[1])

    def load(self, hub: Hub, pool: Path, *, count: int, skip: int = 0, concurrency: int = 0,
             rate: float = 0.0, max_seconds: float = 30.0, timeout: float = 120.0,
             warmup: int = 64, ident: Path | None = None) -> dict[str, Any]:
        """Run the load generator against ``hub``; adds the server's CPU use.  ``ident``:
        the directory whose token secret signs the senders' tokens (default the run's)."""
        cmd = [PYTHON, "-m", "bench.load", "--url", hub.base, "--ident", str(ident or self.ident),
               "--pool", str(pool), "--count", str(skip + count), "--skip", str(skip),
               "--max-seconds", str(max_seconds), "--timeout", str(timeout),
               "--warmup", str(warmup)]
        cmd += ["--rate", str(rate)] if rate else ["--concurrency", str(concurrency)]
        cpu0, w0 = cpu_seconds(hub.pid), time.monotonic()
        child = Child(cmd, self.work / hub.name / "load.log")
        self.children.append(child)
        res = child.result(timeout=max_seconds + timeout + 60)
        res["server_cores"] = (cpu_seconds(hub.pid) - cpu0) / max(1e-9, time.monotonic() - w0)
        res["client_cores"] = res["client_cpu_s"] / max(1e-9, res["seconds"])
        # CPU used by anything else on the machine meanwhile (other jobs: noise).
        res["other_cores"] = max(0.0, res["machine_busy_cores"] - res["server_cores"]
                                 - res["client_cores"])
        if res["ok"] != res["sent"]:
            note(f"{hub.name}: {res['sent'] - res['ok']} of {res['sent']} requests failed: "
                 f"{res['codes']} {res['errors'][:2]}")
        return res

    def pool(self, tag: str, count: int, size: int, recipients: list[str] | None = None,
             senders: list[str] | None = None) -> Path:
        return presign.pool(self.cache, self.ident, tag, count, size, recipients,
                            senders=senders)

    def cleanup(self) -> None:
        for c in reversed(self.children):
            try:
                c.kill()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        self.children.clear()

    # -- phases --------------------------------------------------------------------------

    def cell(self, size: int, conc: int) -> tuple[int, float]:
        return self.p.cell[(size, conc == 1)]

    def pools(self) -> None:
        """Sign everything before any timing."""
        self.acc: dict[int, Path] = {}
        self.acc_count: dict[int, int] = {}
        for size in self.p.sizes:
            n = sum(self.cell(size, c)[0] * (self.p.reps_10k_c64 if size == 10 * KB and c == 64
                                              else 1) for c in self.p.concurrency)
            if size == 10 * KB:
                n = max(n + 2 * self.p.rate_count, self.p.depth_accept)
            self.acc[size] = self.pool("acc", n, size)
            self.acc_count[size] = n
        self.e2e = self.pool("e2e", max(self.p.e2e_count, 50), 10 * KB, [PEER_ORGAN])
        self.big = self.pool("big", 1, self.p.big_size, [PEER_ORGAN])

    def phase_floor(self) -> None:
        for size in self.p.sizes:
            child = Child([PYTHON, "-m", "bench.floor", "--pool", str(self.acc[size]),
                           "--count", "300", "--seconds", str(self.p.floor_seconds),
                           "--reps", str(self.p.floor_reps), "--cpu", "0"],
                          self.work / "floor" / "floor.log", tree=self.tree)
            self.children.append(child)
            res = child.result(timeout=60 + self.p.floor_seconds * self.p.floor_reps * 3)
            self.floor[size] = res["docs_per_s"]
            spread = (max(res["reps"]) - min(res["reps"])) / res["docs_per_s"]
            self.record("floor.docs_per_s", {"size": fmt_size(size), "cpus": 1},
                        round(res["docs_per_s"], 1), "docs/s", spread=round(spread, 3),
                        ms_per_doc=round(res["ms_per_doc"], 3), stages_ms=res["stages_ms"])

    def phase_accept(self) -> None:
        for size in self.p.sizes:
            hub = self.hub(f"accept-{size}")
            hub.start()
            skip = 0
            for conc in self.p.concurrency:
                count, secs = self.cell(size, conc)
                reps = self.p.reps_10k_c64 if (size == 10 * KB and conc == 64) else 1
                runs = []
                for _ in range(reps):
                    runs.append(self.load(hub, self.acc[size], count=count, skip=skip,
                                          concurrency=conc, max_seconds=secs,
                                          warmup=min(64, count // 10)))
                    skip += count
                rates = [r["throughput"] for r in runs]
                best = sorted(runs, key=lambda r: r["throughput"])[len(runs) // 2]  # median run
                params = {"size": fmt_size(size), "concurrency": conc}
                target = passed = None
                if size == 10 * KB and conc == 64:
                    target, passed = f">= {T_ACCEPT_10K:.0f}", best["throughput"] >= T_ACCEPT_10K
                    self.accept_c64[size] = best["throughput"]
                elif conc == 64:
                    self.accept_c64[size] = best["throughput"]
                extra: dict[str, Any] = {}
                if reps > 1:
                    extra["runs"] = [round(r, 1) for r in rates]
                    extra["spread"] = round((max(rates) - min(rates)) / statistics.median(rates), 3)
                self.record("accept.throughput", params, round(best["throughput"], 1), "docs/s",
                            target, passed, server_cores=round(best["server_cores"], 2),
                            cpu_ms_per_doc={
                                "server": round(best["server_cores"] / best["throughput"] * 1e3, 3),
                                "client": round(best["client_cores"] / best["throughput"] * 1e3, 3)},
                            client_cores=round(best["client_cores"], 2),
                            other_cores=round(best["other_cores"], 2),
                            ok=best["ok"], sent=best["sent"], **extra)
                self.record("accept.latency_p50", params, round(best["p50_ms"], 2), "ms")
                self.record("accept.latency_p99", params, round(best["p99_ms"], 2), "ms")
                if size in self.floor and conc == 64:
                    ratio = best["throughput"] / self.floor[size]
                    t = f">= {T_FLOOR_RATIO:.2f}" if size == 10 * KB else None
                    self.record("accept.floor_ratio", params, round(ratio, 3), "x floor", t,
                                ratio >= T_FLOOR_RATIO if t else None,
                                floor=round(self.floor[size], 1))
            if size == 10 * KB:
                self.fixed_rate(hub, skip)
            hub.stop()

    def fixed_rate(self, hub: Hub, skip: int) -> None:
        """p99 latency at half the target rate, and at half the rate measured (open loop)."""
        measured = self.accept_c64.get(10 * KB, 0.0)
        rates = [T_ACCEPT_10K / 2]
        if measured and abs(measured / 2 - T_ACCEPT_10K / 2) > 20 and self.p.name == "full":
            rates.append(round(measured / 2, 1))
        for rate in rates:
            count = min(self.p.rate_count, int(rate * (8 if self.p.name == "full" else 1.5)))
            if skip + count > self.acc_count[10 * KB]:
                note("fixed-rate: pool exhausted, skipping")
                return
            res = self.load(hub, self.acc[10 * KB], count=count, skip=skip, rate=rate,
                            max_seconds=count / rate + 5, warmup=min(50, count // 10))
            skip += count
            params = {"size": "10 KB", "offered_rate": rate}
            half_target = rate == T_ACCEPT_10K / 2
            self.record("accept.fixed_rate_p99", params, round(res["p99_ms"], 2), "ms",
                        f"<= {T_P99_MS:.0f}" if half_target else None,
                        (res["p99_ms"] <= T_P99_MS) if half_target else None,
                        p50_ms=round(res["p50_ms"], 2), achieved=round(res["throughput"], 1),
                        other_cores=round(res["other_cores"], 2),
                        server_cores=round(res["server_cores"], 2), ok=res["ok"], sent=res["sent"])

    def phase_e2e(self) -> None:
        hub = self.hub("e2e")
        port = free_port()
        hub.config_text = self.args.hub_config + "\n" + (f'[adapters."{PEER_ROUTE}"]\nclass = "edxml_http"\n'
                           f'url = "http://127.0.0.1:{port}/edxml"\n')
        hub.start()
        # The peer needs the hub's address; the hub needs the peer's port: fixed in advance.
        peer_child = self.peer("e2e", port, hub)
        n = self.p.e2e_count
        cpu0 = cpu_seconds(hub.pid)
        res = self.load(hub, self.e2e, count=n, concurrency=64, max_seconds=120,
                        warmup=0)
        limit = time.monotonic() + max(30.0, min(self.left() - 5, 240.0))
        st = self.peer_stats(port)
        while time.monotonic() < limit:
            st = self.peer_stats(port)
            done = sum(v for k, v in st["status_codes"].items() if k in ("200", "202"))
            if done >= res["ok"] and st["status_pending"] == 0:
                break
            time.sleep(0.1)
        cores = (cpu_seconds(hub.pid) - cpu0)
        peer_cpu = cpu_seconds(peer_child.proc.pid)
        done = sum(v for k, v in st["status_codes"].items() if k in ("200", "202"))
        end = st["status_last"] or time.time()
        span = end - res["wall_start"]
        rate = done / span if span > 0 else 0.0
        hub.stop()
        peer_child.kill()
        relayed = self.relayed_statuses(hub.data)
        self.record("e2e.throughput", {"size": "10 KB", "concurrency": 64, "documents": n},
                    round(rate, 1), "docs/s", f">= {T_E2E:.0f}", rate >= T_E2E and relayed >= n,
                    accept_rate=round(res["throughput"], 1), delivered=st["received"],
                    hop_signed=st["hop_signed"], statuses=st["status_codes"],
                    relayed_to_sender_inbox=relayed, seconds=round(span, 2),
                    machine_busy_cores=round(res["machine_busy_cores"], 2),
                    server_cores=round(cores / span, 2) if span > 0 else None,
                    cpu_ms_per_doc={"server": round(cores / max(1, done) * 1e3, 3),
                                    "client": round(res["client_cpu_s"] / max(1, done) * 1e3, 3),
                                    "peer": round(peer_cpu / max(1, done) * 1e3, 3)})

    @staticmethod
    def relayed_statuses(data: Path) -> int:
        from spool.sqlite.bulk import relayed_status_count
        return relayed_status_count(data / "spool.db")

    def phase_depth(self) -> None:
        base: dict[str, float] = {}
        for depth in self.p.depths:
            # fill (~50 µs a row) + two starts + load + dispatch, pessimistic
            need = depth * 60e-6 + (20 if self.p.name == "quick" else 70)
            if self.left() < need:
                self.record("depth.skipped", {"queued": depth}, None, "", None, None,
                            reason=f"{self.left():.0f} s of budget left, ~{need:.0f} s needed")
                continue
            name = f"depth-{depth}"
            data = self.work / name / "var"
            hub = self.hub(name, data=data)
            hub.prepare()
            fill = Child([PYTHON, "-m", "bench.fill", "--data", str(data), "--pool", str(self.e2e),
                          "--backlog", str(depth)], self.work / name / "fill.log", tree=self.tree)
            self.children.append(fill)
            filled = fill.result(timeout=300)
            start_s = hub.start(timeout=120)
            res = self.load(hub, self.acc[10 * KB], count=self.p.depth_accept, concurrency=64,
                            max_seconds=20, warmup=64)
            hub.stop()
            # The dispatch backlog: due deliveries to the peer route, taken as the hub starts.
            port = free_port()
            hub.config_text = self.args.hub_config + "\n" + (f'[adapters."{PEER_ROUTE}"]\nclass = "edxml_http"\n'
                               f'url = "http://127.0.0.1:{port}/edxml"\n')
            peer = self.peer(name, port)
            fill2 = Child([PYTHON, "-m", "bench.fill", "--data", str(data), "--pool", str(self.e2e),
                           "--dispatch", str(self.p.dispatch_count)], self.work / name / "fill.log",
                          tree=self.tree)
            self.children.append(fill2)
            fill2.result(timeout=120)
            start2 = hub.start(timeout=120)
            k = self.p.dispatch_count
            limit = time.monotonic() + min(60.0, max(10.0, self.left() - 30))
            st: dict[str, Any] = {}
            while time.monotonic() < limit:
                st = self.peer_stats(port)
                if st["received"] >= k:
                    break
                time.sleep(0.1)
            hub.stop()
            peer.kill()
            dispatch = ((st["received"] - 1) / (st["last"] - st["first"])
                        if st.get("received", 0) > 1 and st["last"] > st["first"] else 0.0)
            if depth == 0:
                base = {"accept": res["throughput"], "dispatch": dispatch}
            params = {"queued": depth}
            a_ratio = res["throughput"] / base["accept"] if base else None
            d_ratio = dispatch / base["dispatch"] if base and base["dispatch"] else None
            big = depth >= 1_000_000
            self.record("depth.accept", params, round(res["throughput"], 1), "docs/s",
                        f">= {T_DEPTH_RATIO:.0%} of empty" if big else None,
                        (a_ratio >= T_DEPTH_RATIO) if big and a_ratio else None,
                        vs_empty=round(a_ratio, 3) if a_ratio else None,
                        p99_ms=round(res["p99_ms"], 2), ok=res["ok"], sent=res["sent"],
                        machine_busy_cores=round(res["machine_busy_cores"], 2))
            self.record("depth.dispatch", params, round(dispatch, 1), "docs/s",
                        f">= {T_DEPTH_RATIO:.0%} of empty" if big else None,
                        (d_ratio >= T_DEPTH_RATIO) if big and d_ratio else None,
                        vs_empty=round(d_ratio, 3) if d_ratio else None,
                        delivered=st.get("received"), of=k)
            self.record("depth.start", params, round(start_s, 2), "s",
                        f"<= {T_START_S:.0f}" if big else None,
                        (start_s <= T_START_S) if big else None,
                        second_start=round(start2, 2),
                        fill_seconds=round(filled.get("backlog_seconds", 0.0), 1),
                        db_mb=round(filled["db_bytes"] / 1e6, 1))
            if not self.args.keep:
                shutil.rmtree(self.work / name, ignore_errors=True)

    def phase_big(self) -> None:
        size = self.p.big_size
        port = free_port()
        hub = self.hub("big", config=(f'[adapters."{PEER_ROUTE}"]\nclass = "edxml_http"\n'
                                      f'url = "http://127.0.0.1:{port}/edxml"\ntimeout = "600s"\n'))
        hub.start()
        peer = self.peer("big", port)
        # Warm the server first (first-use allocations are not the envelope's cost).
        self.load(hub, self.acc[10 * KB], count=50, concurrency=4, max_seconds=10, warmup=0)
        time.sleep(0.5)
        base_rss, _ = hub.rss()
        reset = hub.reset_peak()
        res = self.load(hub, self.big, count=1, concurrency=1, max_seconds=600, timeout=600,
                        warmup=0)
        _, peak_accept = hub.rss()
        # Refused: nothing will be relayed, do not wait for it.
        limit = time.monotonic() + (max(30.0, min(120.0, self.left() - 5)) if res["ok"] else 0.0)
        st = self.peer_stats(port)
        while time.monotonic() < limit and st["received"] < 1:
            time.sleep(0.2)
            st = self.peer_stats(port)
        relay_s = (st["last"] - res["wall_end"]) if st["received"] else None
        cur, peak = hub.rss()
        hub.stop()
        peer.kill()
        growth = peak - base_rss
        accepted = res["ok"] == 1
        params = {"size": fmt_size(size)}
        self.record("big.accept_seconds", params, round(res["p50_ms"] / 1e3, 2), "s",
                    None, accepted, codes=res["codes"], error=(res["errors"] or [None])[0])
        self.record("big.relay_seconds", params, round(relay_s, 2) if relay_s else None, "s",
                    None, st["received"] >= 1, relayed_bytes=st["bytes"],
                    hop_signed=st["hop_signed"])
        self.record("big.peak_rss_growth", params, round(growth / MB, 1), "MB",
                    f"<= {T_RSS_FACTOR:.0f}x size",
                    (growth <= T_RSS_FACTOR * size) and accepted and st["received"] >= 1,
                    factor=round(growth / size, 2), baseline_mb=round(base_rss / MB, 1),
                    peak_mb=round(peak / MB, 1),
                    peak_after_accept_mb=round(peak_accept / MB, 1), peak_reset=reset)

    def phase_door(self) -> None:
        """sendEdoc + getEdoc through the door beside POST /v1/envelopes + GET /v1/inbox/{id}:
        one hub, the APIs alternating (http, door, http, door...), 10 KB, concurrency 16."""
        from hub.door.credentials import issue
        from bench.common import COMMUNES, OFFICES
        n, reps, conc = self.p.door_count, self.p.door_reps, 16
        pool = self.pool("door", n * 2 * reps, 10 * KB)
        hub = self.hub("door")
        hub.prepare()
        for organ in (*COMMUNES, *OFFICES):
            issue(hub.data, organ)
        hub.start()
        runs: dict[str, list[dict[str, Any]]] = {"http": [], "door": []}
        skip = 0
        for _ in range(reps):
            for api in ("http", "door"):
                cmd = [PYTHON, "-m", "bench.doorload", "--url", hub.base, "--api", api,
                       "--ident", str(self.ident), "--data", str(hub.data), "--pool", str(pool),
                       "--skip", str(skip), "--count", str(n), "--concurrency", str(conc),
                       "--server-pid", str(hub.pid)]
                skip += n
                child = Child(cmd, self.work / "door" / "doorload.log")
                self.children.append(child)
                res = child.result(timeout=300)
                for half in ("send", "get"):
                    if res[half]["ok"] != res[half]["sent"]:
                        note(f"door {api} {half}: {res[half]['sent'] - res[half]['ok']} of "
                             f"{res[half]['sent']} failed: {res[half]['codes']}")
                runs[api].append(res)
        hub.stop()
        best: dict[tuple[str, str], float] = {}
        for api, results in runs.items():
            for half, label in (("send", "sendEdoc" if api == "door" else "POST /v1/envelopes"),
                                ("get", "getEdoc" if api == "door" else "GET /v1/inbox/{id}")):
                rates = [r[half]["throughput"] or 0.0 for r in results]
                med = sorted(results, key=lambda r: r[half]["throughput"] or 0.0)[len(results) // 2]
                m = med[half]
                best[(api, half)] = m["throughput"] or 0.0
                self.record(f"door.{half}_throughput", {"api": api, "call": label, "size": "10 KB",
                                                         "concurrency": conc},
                            round(m["throughput"] or 0.0, 1), "docs/s",
                            p50_ms=round(m["p50_ms"], 2), p99_ms=round(m["p99_ms"], 2),
                            server_cores=round(m["server_cores"] or 0.0, 2),
                            server_cpu_ms_per_doc=round(m["server_cpu_ms_per_doc"], 3),
                            client_cores=round(m["client_cores"] or 0.0, 2),
                            client_cpu_ms_per_doc=round(m["client_cpu_ms_per_doc"], 3),
                            ok=m["ok"], sent=m["sent"], runs=[round(x, 1) for x in rates])
        for half in ("send", "get"):
            http_rate = best[("http", half)]
            cpu = {api: statistics.median(r[half]["server_cpu_ms_per_doc"] for r in runs[api])
                   for api in runs}
            self.record("door.vs_http", {"call": half}, round(best[("door", half)] / http_rate, 3)
                        if http_rate else None, "x http",
                        server_cpu_ratio=round(cpu["door"] / cpu["http"], 3) if cpu["http"] else None)

    def phase_peer_hub(self) -> None:
        axis.phase_peer_hub(self)

    def phase_provincial(self) -> None:
        axis.phase_provincial(self)

    # -- the run -------------------------------------------------------------------------------

    PHASES: dict[str, str] = {"floor": "phase_floor", "accept": "phase_accept",
                              "e2e": "phase_e2e", "depth": "phase_depth", "big": "phase_big",
                              "door": "phase_door", "peer_hub": "phase_peer_hub",
                              "provincial": "phase_provincial"}
    #: A phase is not started with less than this much budget left (seconds, quick/full).
    NEEDS = {"floor": (3, 15), "accept": (15, 90), "e2e": (5, 30), "depth": (10, 40),
             "big": (5, 40), "door": (10, 40), "peer_hub": (10, 45), "provincial": (10, 45)}

    def run(self, phases: list[str]) -> int:
        note(f"{self.p.name} run; work dir {self.work}; budget {self.p.budget:.0f} s")
        from bench.load import machine_busy
        b0, t0 = machine_busy(), time.monotonic()
        time.sleep(1.0)
        foreign = (machine_busy() - b0) / (time.monotonic() - t0)
        if foreign > 0.3:
            note(f"WARNING: the machine is not idle ({foreign:.2f} cores busy before the run): "
                 f"figures will be low and noisy")
        self.record("run.info", {"profile": self.p.name}, None, "", None, None,
                    **describe_tree(self.tree), hub_config=self.args.hub_config or None,
                    machine=machine(), busy_cores_before=round(foreign, 2))
        self.pools()
        note(f"pools ready in {time.monotonic() - self.t0:.1f} s")
        failed = False
        for phase in phases:
            need = self.NEEDS[phase][self.p.name == "full"]
            if self.left() < need:
                self.record(f"{phase}.skipped", {}, None, "", None, None,
                            reason=f"{self.left():.0f} s of budget left, {need} s needed")
                continue
            t = time.monotonic()
            note(f"phase {phase}")
            try:
                getattr(self, self.PHASES[phase])()
            except Exception as exc:  # report, clean up, go on with the next phase
                failed = True
                self.record(f"{phase}.error", {}, None, "", None, False,
                            error=f"{type(exc).__name__}: {exc}"[:2000])
            finally:
                self.cleanup()
            note(f"phase {phase} done in {time.monotonic() - t:.1f} s")
        self.finish()
        return 1 if failed else 0

    def finish(self) -> None:
        elapsed = time.monotonic() - self.t0
        rows = [(r["name"], ", ".join(f"{k}={v}" for k, v in r["params"].items()),
                 "" if r["value"] is None else f"{r['value']:g} {r['unit']}",
                 r["target"] or "", {True: "PASS", False: "MISS", None: ""}[r["pass"]])
                for r in self.records]
        head = ("measurement", "params", "value", "target", "")
        widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(5)]
        line = "  ".join("{:<%d}" % w for w in widths)
        print()
        print(line.format(*head))
        print(line.format(*("-" * w for w in widths)))
        for row in rows:
            print(line.format(*row))
        judged = [r for r in self.records if r["pass"] is not None]
        print(f"\n{sum(r['pass'] for r in judged)}/{len(judged)} targets met; "
              f"{self.p.name} run took {elapsed:.0f} s")
        if self.args.json:
            Path(self.args.json).write_text("\n".join(json.dumps(r, ensure_ascii=False)
                                                      for r in self.records) + "\n")
        if self.args.markdown:
            md = ["| measurement | params | value | target | met |", "|---|---|---|---|---|"]
            md += [f"| {' | '.join(row)} |" for row in rows]
            Path(self.args.markdown).write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="lienthong-hub benchmarks")
    p.add_argument("--quick", action="store_true", help="small run, about a minute")
    p.add_argument("--phases", default="floor,accept,e2e,depth,big,peer_hub,provincial",
                   help="comma list of: floor, accept, e2e, depth, big, peer_hub, provincial, "
                   "door (door is not in the default list: run it with --phases door)")
    p.add_argument("--budget", type=float, help="seconds for the whole run (default 90 / 600)")
    p.add_argument("--work", help="work directory (default: a new temporary one, removed)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--cache", default=os.environ.get(
        "BENCH_CACHE", str(Path(tempfile.gettempdir()) / "lienthong-bench-cache")),
        help="signed document pools and dev keys, reused between runs")
    p.add_argument("--server-tree", help="run the hub from this source tree (a patched copy)")
    p.add_argument("--depths", help="comma list of spool depths for the depth phase "
                   "(default 0,100000,1000000; quick 0,20000)")
    # The load comes from one address at more than the default per-address rate limit:
    # the bench measures the hub, not its limiter.
    p.add_argument("--hub-config", default="rate_limit_per_address = 0\nrate_limit_per_identity = 0",
                   help="TOML lines added to every hub's config (default: rate limits off; "
                   "e.g. 'cpu_workers = 2')")
    p.add_argument("--json", help="also write every record to this file")
    p.add_argument("--markdown", help="also write the table as Markdown to this file")
    args = p.parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.budget:
        profile.budget = args.budget
    if args.depths:
        profile.depths = tuple(int(x) for x in args.depths.split(","))
    phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    unknown = set(phases) - set(Bench.PHASES)
    if unknown:
        p.error(f"unknown phases: {', '.join(sorted(unknown))}")
    bench = Bench(args, profile)

    def on_signal(signum: int, _frame: Any) -> None:
        bench.cleanup()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(bench.cleanup)
    try:
        return bench.run(phases)
    finally:
        bench.cleanup()
        if not args.work and not args.keep:
            shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
