"""Ingress for adapters: the ports they get, and the supervisor of their loops.

Where it sits: beside the HTTP API, in front of cleanup.  An adapter never
sees the hub: a delivering adapter gets an ``EgressPort`` (the clock, the
wire form with the hub's hop signature), an ingesting one an ``IngestPort``
bound to its route (accept raw bytes as that route's relay identity, its
own cursor, the clock).  ``accept`` returns after the durable commit, so an
adapter that confirms to its source after it returns never loses a document.

The supervisor runs each ingesting adapter's ``ingest(port)`` as a task:
when it raises, the error is logged and the loop restarted after a delay
that doubles from ``RESTART_MIN`` up to ``RESTART_MAX`` (reset once a run
has lasted ``RESTART_MAX``); at shutdown the tasks are cancelled and awaited.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime, timezone
from pathlib import Path

from adapters.base import Accepted, Adapter
from hub.auth import Identity
from hub.cleanup.accept import accept
from hub.context import HubContext
from hub.errors import ValidationError

log = logging.getLogger("hub.ingress")

RESTART_MIN = 1.0
RESTART_MAX = 60.0


class HubEgressPort:
    """What a delivering adapter may use of the hub."""

    def __init__(self, hub: HubContext) -> None:
        self._hub = hub

    def clock(self) -> float:
        return self._hub.clock()

    async def wire_form(self, raw: bytes | Path) -> bytes | Path:
        hub = self._hub
        now = datetime.fromtimestamp(hub.clock(), timezone.utc)
        return await hub.cpu.wire_form(raw, hub.spool.payloads.root / "outgoing", now)


class RoutePort:
    """What an ingesting adapter may use of the hub: its route's identity, its cursor."""

    def __init__(self, hub: HubContext, route: str) -> None:
        self._hub = hub
        self.route = route
        self.identity = Identity.relay(route)

    def clock(self) -> float:
        return self._hub.clock()

    async def accept(self, raw: bytes | Path, *, origin: str = "") -> Accepted:
        if isinstance(raw, Path):
            limit = self._hub.settings.max_envelope_size
            size = raw.stat().st_size
            if size > limit:
                raise ValidationError(f"envelope of {size} bytes exceeds max_envelope_size "
                                      f"({limit})", code="envelope_too_large", http_status=413)
            raw = await asyncio.to_thread(raw.read_bytes)
        result = await accept(self._hub, raw, self.identity, origin=origin or f"adapter:{self.route}")
        return Accepted(result.id, result.created, result.kind, result.document_id)

    def _key(self, key: str) -> str:
        return f"cursor.{self.route}.{key}"

    async def get_cursor(self, key: str) -> str | None:
        full = self._key(key)
        return (await self._hub.spool.get_meta(full)).get(full)

    async def set_cursor(self, key: str, value: str) -> None:
        await self._hub.spool.update_meta({self._key(key): value})


@dataclasses.dataclass
class _Loop:
    adapter: Adapter
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    #: Restarts since the loop last ran for ``RESTART_MAX`` (a loop that keeps failing).
    failures_in_a_row: int = 0
    last_error: str | None = None
    last_error_at: float | None = None


class IngestSupervisor:
    """Runs every ingesting adapter's loop, restarting it with backoff."""

    def __init__(self, hub: HubContext, adapters: list[Adapter]) -> None:
        self.hub = hub
        self.loops = {a.name: _Loop(a) for a in adapters if a.ingests}

    async def start(self) -> None:
        for loop in self.loops.values():
            loop.task = asyncio.create_task(self._supervise(loop), name=f"ingest-{loop.adapter.name}")

    async def stop(self) -> None:
        tasks = [loop.task for loop in self.loops.values() if loop.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, loop: _Loop) -> None:
        adapter, delay = loop.adapter, RESTART_MIN
        port = RoutePort(self.hub, adapter.name)
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await adapter.ingest(port)
                log.warning("ingest loop of %s returned; restarting", adapter.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                loop.last_error = f"{type(exc).__name__}: {exc}"[:500]
                loop.last_error_at = self.hub.clock()
                log.exception("ingest loop of %s failed; restarting in %.0fs", adapter.name, delay)
            loop.restarts += 1
            loop.failures_in_a_row += 1
            if asyncio.get_running_loop().time() - started >= RESTART_MAX:
                delay, loop.failures_in_a_row = RESTART_MIN, 1
            await asyncio.sleep(delay)
            delay = min(RESTART_MAX, delay * 2)
