"""The axis phases of ``bench.run``: a second hub (``peer_hub``) and the provincial platform.

``peer_hub``: two real ``lienthong serve`` processes, set up as the README's
"Peer districts" walkthrough does it — district A (Văn Yên, the bundled
directory) and district B (Lục Yên, ``examples/lucyen/directory.toml``), each
with ``lienthong keys init`` keys of its own, a ``peer_hub`` adapter for the
other, a relay token the other issued with ``lienthong token <hub OrganId>
--role relay --route <route>`` and the other's ``keys/hub.pem`` as
``peer_cert``.  A's communes submit signed 10 KB documents for Lục Yên
communes on A; a document is done when A's delivery is ``delivered`` (B has
committed it and answered 202).  In the same phase and with the same
documents, the baseline: one hub pushing the same route with ``edxml_http``
to the fake peer (``bench/peer.py``), which verifies nothing.

``provincial``: one hub with the ``provincial`` adapter against the fake
provincial platform (``python -m hub.sim.vxp_platform``, its own process).
Outbound: A's communes send to a department (route ``provincial``): sendEdoc
into the department's system's mailbox.  Inbound: documents from the
department injected into the platform beforehand (``POST /_control`` inject),
polled in by the hub into the commune's inbox.

Latencies are the hub's own: the event log's ``delivered`` time minus the
message id's timestamp (the acceptance), as ``hub/metrics.py`` counts them.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import (COMMUNES, HUB_ID, OFFICES, PEER_ROUTE, PYTHON, REPO, Child, Hub,
                          free_port, http_get, note, percentile, read_pool, write_pool)

if TYPE_CHECKING:
    from bench.run import Bench

LUCYEN_DIRECTORY = REPO / "examples" / "lucyen" / "directory.toml"
LUCYEN_HUB = "000.99.44.H63"
#: Lục Yên's communes, recipients of the peer_hub phase's documents (on A, by rule).
LUCYEN_COMMUNES = ["000.01.44.H63", "000.02.44.H63"]
#: The route A's documents arrive by at B (B's adapter for A).
ROUTE_AT_B = "peer.vanyen"
#: Sở Nội vụ (provincial department, route ``provincial`` in the bundled directory).
DEPARTMENT = "000.00.02.H63"
PROVINCE = "000.00.00.H63"
HUB_SYSTEM = "sys.vanyen"
DEPARTMENT_SYSTEM = "sys.sonoivu"


def cli(bench: "Bench", *args: str) -> str:
    """``lienthong ARGS`` from the measured tree; its standard output."""
    done = subprocess.run([PYTHON, "-m", "hub.cli", *args], cwd=bench.tree, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"lienthong {' '.join(args[:3])}… failed (rc={done.returncode}): "
                           f"{done.stderr[-2000:]}")
    return done.stdout.strip()


def _busy() -> float:
    from bench.load import machine_busy
    return machine_busy()


def _cpu(pid: int) -> float:
    from bench.run import cpu_seconds
    return cpu_seconds(pid)


def push_flow(bench: "Bench", sender: Hub, route: str, pool: Path, count: int,
              others: dict[str, int], *, skip: int = 0, rate: float = 0.0) -> dict[str, Any]:
    """Load ``sender`` with ``count`` documents of ``pool`` (closed loop at concurrency 64,
    or open loop at ``rate``) and wait until its deliveries on ``route`` are final.
    Throughput from the first POST to the last ``delivered``; latencies accept →
    delivered (of this flow's documents only); CPU of the sender and of ``others``
    (name → pid) over the whole window."""
    from spool.ids import timestamp_of
    from spool.sqlite.bulk import deliveries_by_state, delivered_times
    db = sender.data / "spool.db"
    pids = {"sender": sender.pid, **others}
    cpu0 = {k: _cpu(p) for k, p in pids.items()}
    busy0, w0 = _busy(), time.monotonic()
    done0 = len(delivered_times(db, route))
    if rate:
        res = bench.load(sender, pool, count=count, skip=skip, rate=rate,
                         max_seconds=count / rate + 5, warmup=0)
    else:
        res = bench.load(sender, pool, count=count, skip=skip, concurrency=64, max_seconds=120,
                         warmup=0)
    limit = time.monotonic() + max(20.0, min(90.0, bench.left() - 10))
    states: dict[str, int] = {}
    while time.monotonic() < limit:
        states = deliveries_by_state(db, route)
        if states.get("delivered", 0) + states.get("failed", 0) >= done0 + res["ok"]:
            break
        time.sleep(0.1)
    wall = time.monotonic() - w0
    cpu = {k: _cpu(p) - cpu0[k] for k, p in pids.items()}
    busy = (_busy() - busy0) / wall
    rows = [r for r in delivered_times(db, route) if r[1] >= res["wall_start"]]
    lat = [at - (timestamp_of(mid) or accepted) for mid, accepted, at in rows]
    last = max((at for _, _, at in rows), default=res["wall_start"])
    span = last - res["wall_start"]
    done = len(rows)
    client = res["client_cpu_s"]
    return {
        "rate": done / span if span > 0 else 0.0, "delivered": done, "sent": res["sent"],
        "ok": res["ok"], "states": states, "accept_rate": res["throughput"],
        "seconds": span, "p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": max(lat) * 1e3 if lat else None,
        "cpu_ms_per_doc": {**{k: round(v / max(1, done) * 1e3, 3) for k, v in cpu.items()},
                           "client": round(client / max(1, done) * 1e3, 3)},
        "cores": {k: round(v / wall, 2) for k, v in cpu.items()},
        "other_cores": round(max(0.0, busy - (sum(cpu.values()) + client) / wall), 2),
    }


def _record_flow(bench: "Bench", prefix: str, params: dict[str, Any], f: dict[str, Any],
                 **extra: Any) -> None:
    bench.record(f"{prefix}.throughput", params, round(f["rate"], 1), "docs/s",
                 accept_rate=round(f["accept_rate"] or 0.0, 1), delivered=f["delivered"],
                 ok=f["ok"], sent=f["sent"], states=f["states"], seconds=round(f["seconds"], 2),
                 cpu_ms_per_doc=f["cpu_ms_per_doc"], cores=f["cores"],
                 other_cores=f["other_cores"], **extra)
    bench.record(f"{prefix}.latency_p50", params, round(f["p50_ms"], 1), "ms")
    bench.record(f"{prefix}.latency_p99", params, round(f["p99_ms"], 1), "ms",
                 max_ms=round(f["max_ms"], 1) if f["max_ms"] is not None else None)


# -- peer_hub -------------------------------------------------------------------------------

def lucyen_directory(bench: "Bench", path: Path) -> Path:
    """Lục Yên's directory, plus the Văn Yên communes that send in this phase, each pinned
    to its certificate: a peer district's hub can only verify the senders it lists with a
    certificate or CA (a ``[[rule]]`` carries no trust anchor), and an unknown signer is
    ``signature_invalid`` under the default policy."""
    text = LUCYEN_DIRECTORY.read_text(encoding="utf-8")
    for organ in COMMUNES:
        cert = bench.ident / "keys" / "orgs" / f"{organ}.pem"
        text += (f'\n[[organ]]\nid = "{organ}"\nname = "Văn Yên commune {organ}"\n'
                 f'kind = "external"\nroute = "{ROUTE_AT_B}"\ncert = "{cert}"\n')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def peer_hubs(bench: "Bench", name: str) -> tuple[Hub, Hub]:
    """Districts A and B, started, each with a peer_hub adapter for the other."""
    a = bench.hub(f"{name}-a")
    b = bench.hub(f"{name}-b")
    a.prepare()  # the run's keys (hub 000.99.48.H63) and token secret
    directory = lucyen_directory(bench, bench.work / b.name / "directory.toml")
    base_b = bench.args.hub_config + f'\ndirectory = "{directory}"\n'
    b.config.parent.mkdir(parents=True, exist_ok=True)
    b.config.write_text(base_b, encoding="utf-8")
    b_opts = ["-c", str(b.config), "--data", str(b.data)]
    a_opts = ["-c", str(a.config), "--data", str(a.data)]
    cli(bench, "keys", "init", *b_opts)          # B's own CA, hub key, organisations' keys
    for_a = cli(bench, "token", HUB_ID, "--role", "relay", "--route", ROUTE_AT_B, *b_opts)
    for_b = cli(bench, "token", LUCYEN_HUB, "--role", "relay", "--route", PEER_ROUTE, *a_opts)
    a.config_text = bench.args.hub_config + (
        f'\n[adapters."{PEER_ROUTE}"]\nclass = "peer_hub"\nurl = "http://127.0.0.1:{b.port}"\n'
        f'token = "{for_a}"\npeer_cert = "{b.data / "keys" / "hub.pem"}"\n')
    b.config_text = base_b + (
        f'\n[adapters."{ROUTE_AT_B}"]\nclass = "peer_hub"\nurl = "http://127.0.0.1:{a.port}"\n'
        f'token = "{for_b}"\npeer_cert = "{a.data / "keys" / "hub.pem"}"\n')
    b.start()
    a.start()
    return a, b


def phase_peer_hub(bench: "Bench") -> None:
    n, secs, most = bench.p.peer_count, bench.p.axis_rate_seconds, bench.p.axis_rate_count
    # One recipient each: a document for two units of the peer district is two deliveries
    # on one route, and the second is refused by B as a conflicting resend (RESULTS.md).
    pool = bench.pool("peerhub", n + most, 10 * 1000, LUCYEN_COMMUNES[:1])
    # The baseline: the same documents, the same route, edxml_http to the fake peer; and
    # the two hubs.  All four processes run through the phase (idle when not measured).
    port = free_port()
    base = bench.hub("peerhub-base", config=(f'[adapters."{PEER_ROUTE}"]\nclass = "edxml_http"\n'
                                            f'url = "http://127.0.0.1:{port}/edxml"\n'))
    base.start()
    fake = bench.peer("peerhub-base", port)
    a, b = peer_hubs(bench, "peerhub")
    paths = {"edxml_http → fake peer": (base, {"fake_peer": fake.proc.pid}),
             "peer_hub → hub B": (a, {"hub_b": b.pid})}
    flows: dict[str, dict[str, Any]] = {}
    for path, (hub, others) in paths.items():
        flows[path] = push_flow(bench, hub, PEER_ROUTE, pool, n, others)
    # p99 below saturation: both paths at one offered rate, half the slower one's maximum.
    rate = round(min(f["rate"] for f in flows.values()) / 2, 0)
    fixed: dict[str, dict[str, Any]] = {}
    if rate >= 5:
        count = min(most, int(rate * secs))
        for path, (hub, others) in paths.items():
            fixed[path] = push_flow(bench, hub, PEER_ROUTE, pool, count, others, skip=n, rate=rate)
    from spool.sqlite.bulk import deliveries_by_state
    at_b = deliveries_by_state(b.data / "spool.db", "mailbox")
    back = statuses_back(bench, a, b, pool, min(n, 1000))
    for hub in (a, b, base):
        hub.stop()
    fake.kill()
    params = {"size": "10 KB", "concurrency": 64, "documents": n}
    for path, f in flows.items():
        extra = ({"in_b_inboxes": sum(at_b.values()), "refused_at_b": _refusals(b)}
                 if path.startswith("peer_hub") else {})
        _record_flow(bench, "peer_hub", {"path": path, **params}, f, **extra)
    for path, f in fixed.items():
        bench.record("peer_hub.fixed_rate_p99", {"path": path, "size": "10 KB",
                                                  "offered_rate": rate},
                     round(f["p99_ms"], 1), "ms", p50_ms=round(f["p50_ms"], 1),
                     achieved=round(f["rate"], 1), delivered=f["delivered"],
                     cpu_ms_per_doc=f["cpu_ms_per_doc"], other_cores=f["other_cores"])
    bench.record("peer_hub.status_back_throughput",
                 {"path": "B's commune → hub B → peer_hub → A's sender's inbox", "code": "03",
                  "concurrency": 64, "statuses": back["accepted_at_b"]},
                 round(back["rate"], 1), "statuses/s", **{k: v for k, v in back.items()
                                                          if k != "rate"})
    f0, f1 = flows["edxml_http → fake peer"], flows["peer_hub → hub B"]
    bench.axis_baseline = f0
    bench.axis_rate = rate
    sender0 = f0["cpu_ms_per_doc"]["sender"]
    total0 = sender0 + f0["cpu_ms_per_doc"]["fake_peer"]
    total1 = f1["cpu_ms_per_doc"]["sender"] + f1["cpu_ms_per_doc"]["hub_b"]
    bench.record("peer_hub.vs_fake_peer", params,
                 round(f1["rate"] / f0["rate"], 3) if f0["rate"] else None, "x throughput",
                 fixed_rate_p99_ratio=round(fixed["peer_hub → hub B"]["p99_ms"]
                                            / fixed["edxml_http → fake peer"]["p99_ms"], 2)
                 if fixed else None,
                 sender_cpu_ratio=round(f1["cpu_ms_per_doc"]["sender"] / sender0, 2)
                 if sender0 else None,
                 total_cpu_ratio=round(total1 / total0, 2) if total0 else None,
                 total_cpu_ms_per_doc={"peer_hub": round(total1, 3), "fake_peer": round(total0, 3)})


_DOC_ID = re.compile(rb"<(?:\w+:)?DocumentId>([^<]+)</(?:\w+:)?DocumentId>")


def statuses_back(bench: "Bench", a: Hub, b: Hub, pool: Path, count: int) -> dict[str, Any]:
    """Yên Thế answers each of the first ``count`` documents with status 03 on hub B
    (closed loop, concurrency 64, its tokens from B's secret); B relays them to A, which
    puts them in the senders' inboxes.  Rate from the first POST at B to the last commit
    at A."""
    from hub.edxml import samples
    from spool.sqlite.bulk import received_times
    organ = LUCYEN_COMMUNES[0]
    answers = []
    for sender, raw in read_pool(pool, count):
        match = _DOC_ID.search(raw[:1 << 16])
        assert match is not None
        answers.append((organ, samples.status(organ, sender, match[1].decode(), "03",
                                              description="Đã tiếp nhận")))
    statuses = bench.work / b.name / "statuses.bin"
    write_pool(statuses, iter(answers))
    db = a.data / "spool.db"
    before = len(received_times(db, kind="status"))
    cpu0 = {"hub_a": _cpu(a.pid), "hub_b": _cpu(b.pid)}
    busy0, w0 = _busy(), time.monotonic()
    res = bench.load(b, statuses, count=len(answers), concurrency=64, max_seconds=60,
                     warmup=0, ident=b.data)
    limit = time.monotonic() + max(20.0, min(60.0, bench.left() - 10))
    times: list[float] = []
    while time.monotonic() < limit:
        times = received_times(db, kind="status")[before:]
        if len(times) >= res["ok"]:
            break
        time.sleep(0.1)
    wall = time.monotonic() - w0
    cpu = {k: _cpu(p) - cpu0[k] for k, p in (("hub_a", a.pid), ("hub_b", b.pid))}
    busy = (_busy() - busy0) / wall
    n = len(times)
    span = (times[-1] - res["wall_start"]) if times else 0.0
    return {"rate": n / span if span > 0 else 0.0, "accepted_at_b": res["ok"],
            "in_senders_inboxes_at_a": n, "seconds": round(span, 2),
            "accept_rate_at_b": round(res["throughput"] or 0.0, 1),
            "cpu_ms_per_status": {**{k: round(v / max(1, n) * 1e3, 3) for k, v in cpu.items()},
                                  "client": round(res["client_cpu_s"] / max(1, n) * 1e3, 3)},
            "other_cores": round(max(0.0, busy - (sum(cpu.values()) + res["client_cpu_s"])
                                     / wall), 2)}


def _refusals(hub: Hub) -> int:
    """Refusals in a hub's log (a non-zero figure says why documents did not arrive)."""
    try:
        return sum(1 for line in hub.log.read_text(errors="replace").splitlines()
                   if " refused " in line)
    except OSError:
        return 0


# -- provincial -------------------------------------------------------------------------------

def _control(port: int, cmd: dict[str, Any] | None = None) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/_control"
    if cmd is None:
        return json.loads(http_get(url, 10.0)[1])
    req = urllib.request.Request(url, data=json.dumps(cmd).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def platform(bench: "Bench", name: str, hub_secret: str) -> tuple[Child, int]:
    """The fake provincial platform as a process: the hub's system (the district's units and
    the hub itself) and the department's."""
    port = free_port()
    organs = ",".join((*COMMUNES, *OFFICES, HUB_ID))
    cmd = [PYTHON, "-m", "hub.sim.vxp_platform", "--listen", f"127.0.0.1:{port}",
           "--prefix", "/vxp", "--system", f"{HUB_SYSTEM}:{hub_secret}:{organs}",
           "--system", f"{DEPARTMENT_SYSTEM}:{secrets.token_hex(16)}:{DEPARTMENT},{PROVINCE}"]
    child = Child(cmd, bench.work / name / "platform.log", tree=bench.tree)
    bench.children.append(child)
    deadline = time.monotonic() + 15
    while True:
        try:
            if http_get(f"http://127.0.0.1:{port}/_control", 1.0)[0] == 200:
                return child, port
        except OSError:
            pass
        if child.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"fake platform did not start: {child.log.read_text()[-2000:]}")
        time.sleep(0.05)


def provincial_hub(bench: "Bench", name: str, port: int, secret: str, batch: int | None) -> Hub:
    extra = f"batch = {batch}\n" if batch else ""
    return bench.hub(name, config=(
        f'[adapters.provincial]\nclass = "provincial"\nurl = "http://127.0.0.1:{port}/vxp"\n'
        f'system_id = "{HUB_SYSTEM}"\nsecret = "{secret}"\npoll_interval = "{POLL}"\n' + extra))


POLL = "1s"


def inbound(bench: "Bench", name: str, pool: Path, count: int, batch: int | None) -> None:
    """Documents waiting on the platform for the hub's system, polled in: the drain rate."""
    from spool.sqlite.bulk import received_times
    secret = secrets.token_hex(16)
    plat, port = platform(bench, name, secret)
    t = time.monotonic()
    for _sender, raw in read_pool(pool, count):
        _control(port, {"action": "inject", "messagetype": "edoc",
                        "data_base64": base64.b64encode(raw).decode()})
    inject_s = time.monotonic() - t
    hub = provincial_hub(bench, name, port, secret, batch)
    spawned = time.time()
    hub.start()
    cpu0 = {"hub": _cpu(hub.pid), "platform": _cpu(plat.proc.pid)}
    busy0, w0 = _busy(), time.monotonic()
    db = hub.data / "spool.db"
    limit = time.monotonic() + max(20.0, min(90.0, bench.left() - 10))
    times: list[float] = []
    while time.monotonic() < limit:
        times = received_times(db, "vxp:provincial:")
        if len(times) >= count:
            break
        time.sleep(0.1)
    wall = time.monotonic() - w0
    cpu = {"hub": _cpu(hub.pid) - cpu0["hub"], "platform": _cpu(plat.proc.pid) - cpu0["platform"]}
    busy = (_busy() - busy0) / wall
    snap = _control(port)
    hub.stop()
    plat.kill()
    n = len(times)
    rate = (n - 1) / (times[-1] - times[0]) if n > 1 and times[-1] > times[0] else 0.0
    bench.record("provincial.in.throughput",
                 {"size": "10 KB", "documents": count, "poll_interval": POLL,
                  "batch": batch or "default (100)"},
                 round(rate, 1), "docs/s", taken_in=n,
                 seconds_from_spawn=round(times[-1] - spawned, 2) if times else None,
                 inject_seconds=round(inject_s, 2),
                 confirmed_done=sum(1 for k in snap["counters"]["status_updates"]
                                    if k.endswith(" done")),
                 cpu_ms_per_doc={k: round(v / max(1, n) * 1e3, 3) for k, v in cpu.items()},
                 other_cores=round(max(0.0, busy - sum(cpu.values()) / wall), 2))


def phase_provincial(bench: "Bench") -> None:
    n_out, n_in = bench.p.prov_count, bench.p.prov_in_count
    most = bench.p.axis_rate_count
    out_pool = bench.pool("prov-out", n_out + most, 10 * 1000, [DEPARTMENT])
    in_pool = bench.pool("prov-in", n_in, 10 * 1000, [COMMUNES[0]], senders=[DEPARTMENT])
    # Outbound: the district's communes to the department, by sendEdoc.
    secret = secrets.token_hex(16)
    plat, port = platform(bench, "prov-out", secret)
    hub = provincial_hub(bench, "prov-out", port, secret, None)
    hub.start()
    params = {"size": "10 KB", "concurrency": 64, "documents": n_out}
    f = push_flow(bench, hub, "provincial", out_pool, n_out, {"platform": plat.proc.pid})
    # p99 below saturation, at the peer_hub phase's offered rate (comparable), else at half
    # the rate just measured.
    rate = bench.axis_rate or round(f["rate"] / 2, 0)
    fixed = None
    if rate >= 5:
        fixed = push_flow(bench, hub, "provincial", out_pool,
                          min(most, int(rate * bench.p.axis_rate_seconds)),
                          {"platform": plat.proc.pid}, skip=n_out, rate=rate)
    snap = _control(port)
    hub.stop()
    plat.kill()
    sends = snap["counters"]["sends"]
    _record_flow(bench, "provincial.out", params, f, platform_documents=snap["documents"],
                 platform_sends=sum(sends.values()), resent=sum(v - 1 for v in sends.values()))
    if fixed is not None:
        bench.record("provincial.out.fixed_rate_p99", {"size": "10 KB", "offered_rate": rate},
                     round(fixed["p99_ms"], 1), "ms", p50_ms=round(fixed["p50_ms"], 1),
                     achieved=round(fixed["rate"], 1), delivered=fixed["delivered"],
                     cpu_ms_per_doc=fixed["cpu_ms_per_doc"], other_cores=fixed["other_cores"])
    base = bench.axis_baseline
    if base and base["rate"]:
        bench.record("provincial.out_vs_fake_peer", params, round(f["rate"] / base["rate"], 3),
                     "x throughput", p99_ratio=round(f["p99_ms"] / base["p99_ms"], 2),
                     sender_cpu_ratio=round(f["cpu_ms_per_doc"]["sender"]
                                            / base["cpu_ms_per_doc"]["sender"], 2))
    # Inbound: the department's documents for a commune, polled in.
    inbound(bench, "prov-in", in_pool, n_in, None)
    if bench.p.name == "full":
        inbound(bench, "prov-in-batch", in_pool, n_in, n_in)
    note("provincial: done")
