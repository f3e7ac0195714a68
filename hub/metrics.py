"""``GET /metrics``: the hub's numbers in Prometheus text format (version 0.0.4).

Where it sits: beside the pipeline, reading only.  Two sources:

* Counters and the latency histogram are fed by a spool listener (called
  after every durable commit with the events it wrote), so they count what
  really happened, not what was attempted.  They start at zero when the hub
  process starts — Prometheus' ``rate()``/``increase()`` handle resets; the
  all-time totals are in the event log (``GET /v1/events``, the audit log)
  and re-counting millions of rows on every start would slow it down.
* Gauges (deliveries by state and route, queue depth, ages, payload bytes)
  are read from ``spool.stats()`` at scrape time, so they are always true
  even across restarts.

No authentication: the hub listens on loopback by default (``listen =
127.0.0.1:8780``) and the numbers carry no document content.  When ``listen``
is opened wider, keep ``/metrics`` behind the reverse proxy's access rules.

The exposition is written here (no ``prometheus_client`` dependency): a few
families, each ``# HELP``/``# TYPE`` then its samples, labels escaped.
"""
from __future__ import annotations

import configparser
import importlib.metadata
import logging
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spool.base import Stats
from spool.ids import timestamp_of as accepted_at
from spool.records import Event
from spool.states import PENDING_STATES, State

log = logging.getLogger("hub.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Delivery latency buckets (seconds): a push route answers in well under a
#: second; a mailbox waits for a person, minutes to an hour.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
           600.0, 1800.0, 3600.0)
_SINCE = " (since the hub process started)"
_PENDING = frozenset(s.value for s in PENDING_STATES)
_OUTCOMES = {State.DELIVERED.value, State.DEFERRED.value, State.FAILED.value}

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels, float]


class Histogram:
    """Counts per bucket (not cumulative: that is done when written out)."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += 1
        self.sum += value
        self.count += 1

    def samples(self, labels: Labels) -> list[Sample]:
        out: list[Sample] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts):
            running += n
            out.append(("_bucket", (*labels, ("le", _number(bound))), running))
        out.append(("_sum", labels, self.sum))
        out.append(("_count", labels, self.count))
        return out


class Metrics:
    """What the spool listener counts; read by the scrape."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.accepted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.attempts: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, Histogram] = {}
        #: Payload files found corrupt when read, by where (delivery, inbox, door).
        self.corrupt: Counter[str] = Counter()
        self.last_event_id = 0

    def observe(self, events: list[Event]) -> None:
        """The spool listener: runs on the event loop after every commit, so it stays cheap."""
        if events:
            self.last_event_id = max(self.last_event_id, events[-1].id)
        for ev in events:
            if ev.kind == "accepted":
                self.accepted[str(ev.detail.get("kind_of", "unknown"))] += 1
            elif ev.kind == "refused":
                self.refused[str(ev.detail.get("code", "unknown"))] += 1
            elif ev.kind == "refused_summary":
                self.refused[str(ev.detail.get("code", "unknown"))] += int(ev.detail.get("count", 0))
            elif ev.kind == "status_received":
                self.statuses[str(ev.detail.get("status_code", "unknown"))] += 1
            elif ev.kind == "state":
                self._state(ev)
            elif ev.kind == "payload_corrupt":
                self.corrupt[str(ev.detail.get("where", "unknown"))] += 1

    def _state(self, ev: Event) -> None:
        route = str(ev.detail.get("route", "unknown"))
        if ev.state == State.ACTIVE.value:
            self.attempts[(route, "started")] += 1
        elif ev.state in _OUTCOMES:
            self.attempts[(route, str(ev.state))] += 1
        if ev.state == State.DELIVERED.value:
            start = accepted_at(ev.message_id)
            if start is not None:
                # ids come from the wall clock, events from the hub's clock:
                # never let a skew between them make a negative latency.
                self.latency.setdefault(route, Histogram()).observe(max(0.0, ev.at - start))


# -- exposition ---------------------------------------------------------------------

def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "NaN" if math.isnan(value) else repr(float(value))


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample_line(name: str, labels: Labels, value: float) -> str:
    if labels:
        inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels)
        return f"{name}{{{inner}}} {_number(value)}"
    return f"{name} {_number(value)}"


class Exposition:
    """One scrape's text: families in order, each HELP, TYPE, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self.lines.append(f"# HELP {name} {escaped}")
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.extend(_sample_line(name + suffix, labels, v) for suffix, labels, v in samples)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _one(value: float, **labels: str) -> list[Sample]:
    return [("", tuple(labels.items()), value)]


def _by(label: str, counts: Counter[Any]) -> list[Sample]:
    return [("", ((label, key),), n) for key, n in sorted(counts.items())]


def counter_families(out: Exposition, m: Metrics, spool: Any) -> None:
    out.family("lienthong_envelopes_accepted_total", "counter",
               "Envelopes committed to the spool, by kind (edoc, status)" + _SINCE,
               _by("kind", m.accepted))
    out.family("lienthong_envelopes_refused_total", "counter",
               "Envelopes refused by cleanup, by error code" + _SINCE, _by("code", m.refused))
    out.family("lienthong_statuses_received_total", "counter",
               "Business statuses received about documents, by status code" + _SINCE,
               _by("status_code", m.statuses))
    out.family("lienthong_delivery_attempts_total", "counter",
               "Delivery attempts started (outcome=started) and deliveries that became delivered, "
               "deferred or failed, by route; a mailbox ack counts as delivered, a lifetime "
               "expiry as failed" + _SINCE,
               [("", (("route", r), ("outcome", o)), n)
                for (r, o), n in sorted(m.attempts.items())])
    out.family("lienthong_delivery_latency_seconds", "histogram",
               "Seconds from acceptance (the message id's timestamp) to delivered, by route"
               + _SINCE,
               [s for r, h in sorted(m.latency.items()) for s in h.samples((("route", r),))])
    out.family("lienthong_payloads_corrupt_total", "counter",
               "Payload files whose bytes no longer hashed to their SHA-256 when read, by where "
               "(delivery, inbox, door); each quarantined a delivery (state corrupt)" + _SINCE,
               _by("where", m.corrupt))
    out.family("lienthong_spool_commits_total", "counter",
               "Group commits (durable transactions) of the spool writer" + _SINCE,
               _one(spool.batches))
    out.family("lienthong_spool_committed_operations_total", "counter",
               "Write operations committed by the spool writer; divided by commits, the mean "
               "batch size" + _SINCE, _one(spool.batched_ops))


def gauge_families(out: Exposition, m: Metrics, stats: Stats, now: float) -> None:
    rows: list[tuple[str, str, int]] = stats["deliveries"]
    routes = sorted({route for _state, route, _n in rows})
    counts = {(state, route): n for state, route, n in rows}
    # Every state of every route seen, zeros included, so series do not vanish.
    out.family("lienthong_deliveries", "gauge", "Deliveries in the spool, by state and route",
               [("", (("state", s.value), ("route", r)), counts.get((s.value, r), 0))
                for r in routes for s in State])
    out.family("lienthong_queue_depth", "gauge",
               "Deliveries waiting on a push route (queued, active, deferred or hold); the "
               "mailbox is lienthong_mailbox_waiting",
               [("", (("route", r),), sum(counts.get((s, r), 0) for s in _PENDING))
                for r in routes if r != "mailbox"])
    out.family("lienthong_mailbox_waiting", "gauge",
               "Documents waiting in recipients' mailboxes (queued, not yet acknowledged)",
               _one(counts.get((State.QUEUED.value, "mailbox"), 0)))
    out.family("lienthong_oldest_queued_age_seconds", "gauge",
               "Age of the oldest queued or deferred delivery on a push route (0: none)",
               _one(_age(now, stats["oldest_queued_at"])))
    out.family("lienthong_mailbox_oldest_waiting_age_seconds", "gauge",
               "Age of the oldest document waiting in a mailbox (0: none)",
               _one(_age(now, stats["oldest_unfetched_at"])))
    out.family("lienthong_spool_payload_bytes", "gauge",
               "Bytes of envelope payloads held by the spool (inline and files)",
               _one(stats["payload_bytes"]))
    out.family("lienthong_event_log_last_id", "gauge",
               "Id of the newest committed event in the spool's event log (compare with a "
               "tail's position)", _one(m.last_event_id))


def _age(now: float, since: float | None) -> float:
    return max(0.0, now - since) if since is not None else 0.0


def adapter_families(out: Exposition, adapters: Iterable[dict[str, Any]]) -> None:
    """From ``hub.health.adapter_report``: each instance's health, polls, documents
    taken in and errors by code (the attempts and latency above are by route,
    which is the instance's name)."""
    items = list(adapters)
    out.family("lienthong_adapter_health", "gauge",
               "Each adapter instance's health (1 for the one it is in: ok, degraded, down, "
               "unserved)", [("", (("instance", a["name"]), ("health", a["health"])), 1)
                             for a in items])
    out.family("lienthong_adapter_queued", "gauge", "Deliveries waiting for each instance",
               [("", (("instance", a["name"]),), a["queued"]) for a in items])
    out.family("lienthong_adapter_polls_total", "counter",
               "Polls of its source by each ingesting instance" + _SINCE,
               [("", (("instance", a["name"]),), a["facts"]["polls"]) for a in items
                if isinstance(a["facts"].get("polls"), int)])
    out.family("lienthong_adapter_taken_in_total", "counter",
               "Documents and statuses each ingesting instance took in" + _SINCE,
               [("", (("instance", a["name"]),), a["taken_in"]) for a in items
                if isinstance(a["taken_in"], int)])
    out.family("lienthong_adapter_errors_total", "counter",
               "Errors each instance met at its external system, by code" + _SINCE,
               [("", (("instance", a["name"]), ("code", str(code))), n) for a in items
                for code, n in sorted(a["errors_by_code"].items()) if isinstance(n, int)])


def render(m: Metrics, stats: Stats, now: float, spool: Any,
           missing_routes: Iterable[str] = (),
           adapters: Iterable[dict[str, Any]] = ()) -> str:
    out = Exposition()
    out.family("lienthong_build_info", "gauge", "The hub's version (always 1)",
               _one(1, version=m.version))
    out.family("lienthong_route_without_adapter", "gauge",
               "Routes the directory names that no adapter instance serves (1 each): documents "
               "for them wait and then fail", [("", (("route", r),), 1) for r in missing_routes])
    counter_families(out, m, spool)
    gauge_families(out, m, stats, now)
    adapter_families(out, adapters)
    return out.text()


def build_version() -> str:
    """The installed distribution's version, else the source tree's setup.cfg."""
    try:
        return importlib.metadata.version("lienthong-hub")
    except importlib.metadata.PackageNotFoundError:
        pass
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg", encoding="utf-8")
    return cfg.get("metadata", "version", fallback="unknown")
