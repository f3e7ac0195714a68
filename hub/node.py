"""The composition root: builds one hub node and starts its parts in order.

    spool → cpu → adapters → qmgr → ingress → receipts → notices → audit → metrics

``open_hub(settings)`` is used by the HTTP server (``hub.api.app``), the
command line and tests alike, so a hub opened without its web app still
issues receipts and failure notices, signs checkpoints and counts metrics.
Closing runs the same steps backwards: ingest loops stop first (nothing new
comes in), the queue manager hands back its leases, the issuers save their
cursors, the last checkpoint is signed, then the spool and the workers close.

Start-up diagnostics: a route the directory names but no adapter instance
serves is logged as a warning (and shown in metrics): documents for it wait
and then fail after ``maximal_lifetime``.
"""
from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator, Callable

from adapters.base import Adapter
from adapters.registry import build_adapters
from hub.audit.auditor import Auditor
from hub.auth import TokenAuthority, load_secret
from hub.cleanup.cpu import Cleaner, CpuPool
from hub.cleanup.notices import NoticeIssuer
from hub.cleanup.pressure import Pressure
from hub.clock import Clock
from hub.config import Settings
from hub.context import HubContext
from hub.crypto.setup import load_crypto
from hub.directory import Directory, load_directory
from hub.ingress import HubEgressPort, IngestSupervisor
from hub.metrics import Metrics, build_version
from hub.qmgr import QueueManager
from hub.receipts.issuer import ReceiptIssuer
from hub.cleanup.refusals import RefusalAudit
from hub.private import private_dir
from spool import open_spool

log = logging.getLogger("hub")


def missing_routes(directory: Directory, adapters: dict[str, Adapter]) -> list[str]:
    """Routes the directory names that no delivering adapter instance serves."""
    served = {name for name, a in adapters.items() if a.delivers or a.pull}
    return sorted(directory.routes() - served)


@contextlib.asynccontextmanager
async def open_hub(settings: Settings, *, clock: Callable[[], float] | None = None,
                   directory: Directory | None = None, run_queue: bool = False,
                   adapters: dict[str, Adapter] | None = None,
                   queue_auto: bool = True, issuers: bool = True) -> AsyncIterator[HubContext]:
    """Open the hub's parts; with ``run_queue`` also the adapters, the queue
    manager and its timers, and the ingest loops.

    ``adapters`` replaces the instances built from ``[adapters.*]`` (tests);
    ``queue_auto=False`` starts the queue manager without its loop and timers,
    so a test drives ``scan()``/``expire()`` itself with a manual clock;
    ``issuers=False`` leaves out the receipt and notice issuers (a hub that
    died right after its commits, for tests of catching up)."""
    clock = clock or Clock()
    directory = directory or load_directory(settings)
    instances = (adapters if adapters is not None else build_adapters(settings.adapters)) \
        if run_queue else {}
    private_dir(settings.data_path)
    tokens = TokenAuthority(load_secret(settings.data_path),
                            known_organ=lambda organ: organ in directory)
    keys, trust = load_crypto(settings, directory)
    spool = open_spool(settings, clock)
    await spool.open()
    cpu = CpuPool(Cleaner.from_settings(settings, directory, keys, trust), settings)
    hub = HubContext(settings, directory, spool, tokens, clock, keys, trust, cpu,
                     adapters=instances)
    started: list[Adapter] = []
    try:
        await cpu.start()
        hub.metrics = Metrics(build_version())
        hub.metrics.last_event_id = spool.last_event_id
        spool.add_listener(hub.metrics.observe)
        if run_queue:
            hub.missing_routes = missing_routes(directory, instances)
            for route in hub.missing_routes:
                log.warning("route %r is in the directory but no adapter instance serves it: "
                            "documents for it wait and fail after maximal_lifetime; configure "
                            "[adapters.%s] in hub.toml", route, route)
            port = HubEgressPort(hub)
            for adapter in instances.values():
                adapter.bind(port)
                await adapter.start()
                started.append(adapter)
            hub.pressure = Pressure(hub)
            await hub.pressure.start()
            hub.qmgr = QueueManager(hub, instances)
            await hub.qmgr.start(schedule=queue_auto, dispatch=queue_auto)
            hub.ingest = IngestSupervisor(hub, list(instances.values()))
            await hub.ingest.start()
        if issuers:
            hub.receipts = ReceiptIssuer(spool, cpu.build_receipts, hub.hub_id)
            await hub.receipts.start()
        if run_queue and issuers:
            hub.notices = NoticeIssuer(hub)
            await hub.notices.start()
        hub.auditor = Auditor(spool, keys, hub.hub_id, clock=clock,
                              interval=settings.checkpoint_interval)
        await hub.auditor.start(directory.to_rows(), schedule=queue_auto)
        hub.on_close.append(hub.auditor.checkpoint)
        hub.refusals = RefusalAudit(hub)
        hub.on_close.append(hub.refusals.close)  # newest first: its summaries, then the checkpoint
        yield hub
    finally:
        await _close(hub, started)


async def _close(hub: HubContext, started: list[Adapter]) -> None:
    async def step(name: str, fn: Callable[[], object]) -> None:
        try:
            result = fn()
            if hasattr(result, "__await__"):
                await result  # type: ignore[misc]
        except Exception:  # one failing step never keeps the spool open
            log.exception("closing %s failed", name)

    if hub.ingest is not None:
        await step("ingest loops", hub.ingest.stop)
    if hub.qmgr is not None:
        await step("queue manager", hub.qmgr.stop)
    if hub.pressure is not None:
        await step("backpressure", hub.pressure.stop)
    if hub.notices is not None:
        await step("failure notices", hub.notices.stop)
    if hub.receipts is not None:
        await step("receipt issuer", hub.receipts.stop)
    if hub.auditor is not None:
        await step("auditor", hub.auditor.stop)
    for adapter in reversed(started):
        await step(f"adapter {adapter.name}", adapter.stop)
    for hook in reversed(hub.on_close):
        await step(f"close hook {hook!r}", hook)
    await hub.spool.close()
    await hub.cpu.close()
