"""The running hub's parts, opened together and closed together.

``open_hub(settings)`` gives a ``HubContext``: configuration, directory,
spool, token authority and clock.  The HTTP server (``hub.api``) and the
command line both use it, so a command such as ``lienthong queue list`` sees
exactly what the server sees.
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from hub.auth import TokenAuthority, load_secret
from hub.errors import ConfigError
from hub.private import private_dir
from hub.crypto.keys import HubKeys, TrustStore, init_dev_keys, load_hub_keys
from hub.clock import Clock
from hub.config import Settings
from hub.cleanup.cpu import Cleaner, CpuPool
from hub.cleanup.refusals import RefusalAudit
from hub.directory import Directory, default_directory_path
from spool import SqliteSpool, open_spool

log = logging.getLogger("hub")


def load_crypto(settings: Settings, directory: Directory) -> tuple[HubKeys, TrustStore]:
    """The hub's signing keys and the trust store, loaded once at start."""
    dev_dir = None
    if settings.hub_pkcs12_file or settings.hub_key_file:
        password = os.environ.get("LIENTHONG_KEY_PASSWORD")
        keys = load_hub_keys(Path(settings.hub_key_file) if settings.hub_key_file else None,
                             Path(settings.hub_cert_file) if settings.hub_cert_file else None,
                             password=password.encode() if password else None,
                             pkcs12_file=Path(settings.hub_pkcs12_file) if settings.hub_pkcs12_file else None)
    else:
        if not settings.dev_keys:
            raise ConfigError("no hub key configured: set hub_key_file and hub_cert_file (or "
                              "hub_pkcs12_file), or dev_keys = true")
        dev_dir = settings.data_path / "keys"
        if not (dev_dir / "hub.key").exists():
            report = init_dev_keys(dev_dir, directory.hub.id,
                                   [o.id for o in directory if o.kind != "hub"])
            log.warning("generated development keys in %s (%d files): not for production",
                        dev_dir, len(report.created))
        keys = load_hub_keys(dev_dir / "hub.key", dev_dir / "hub.pem", ca_file=dev_dir / "ca.pem")
    trust = TrustStore.build([(o.id, o.cert, o.ca) for o in directory], dev_keys_dir=dev_dir,
                             default_ca=Path(settings.trust_ca_file) if settings.trust_ca_file else None)
    return keys, trust


def load_directory(settings: Settings) -> Directory:
    path = Path(settings.directory) if settings.directory else Path(str(default_directory_path()))
    return Directory.load(path, upstream_route=settings.upstream_route)


class HubContext:
    def __init__(self, settings: Settings, directory: Directory, spool: SqliteSpool,
                 tokens: TokenAuthority, clock: Callable[[], float], keys: HubKeys,
                 trust: TrustStore) -> None:
        self.settings = settings
        self.directory = directory
        self.spool = spool
        self.tokens = tokens
        self.clock = clock
        self.keys = keys
        self.trust = trust
        self.cpu = CpuPool(Cleaner.from_settings(settings, directory, keys, trust), settings)
        self.qmgr: Any = None  # hub.qmgr.QueueManager once started
        self.pressure: Any = None  # hub.pressure.Pressure once started
        #: Run by ``open_hub`` at close, newest first, after the queue manager has
        #: stopped and before the spool closes (the audit's last checkpoint).
        self.on_close: list[Callable[[], Awaitable[Any]]] = []
        self.refusals = RefusalAudit(self)
        self.on_close.append(self.refusals.close)

    def wake_qmgr(self, recipients: list[dict[str, str]]) -> None:
        """New deliveries were committed: dispatch push routes now, not at the next sweep."""
        if self.qmgr is not None and any(r["route"] != "mailbox" for r in recipients):
            self.qmgr.wake()

    async def wire_form(self, raw: bytes | Path) -> bytes | Path:
        """The bytes an adapter sends onwards: the original with the hub's
        TraceHeader and hop signature appended (the spool keeps the original).

        For a payload file (``DeliveryRequest.raw`` a ``Path``), the wire form
        is written to a new file under ``payloads/outgoing/`` and its path
        returned: the caller sends it and removes it."""
        # Where cleanup's inspection runs (hub.cpu): a worker process for small
        # envelopes, inline up to 256 KiB without workers (a thread would hold
        # the GIL in turns with the busy event loop), a thread above.
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        if not isinstance(raw, Path):
            return await self.cpu.sign_hop(raw, now)
        outgoing = self.spool.payloads.root / "outgoing"
        private_dir(outgoing)
        out = outgoing / f"{secrets.token_hex(12)}.part"
        try:
            await self.cpu.sign_hop_file(raw, out, now)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return out

    @property
    def hub_id(self) -> str:
        return self.directory.hub.id


@contextlib.asynccontextmanager
async def open_hub(settings: Settings, *, clock: Callable[[], float] | None = None,
                   directory: Directory | None = None, run_queue: bool = False,
                   adapters: dict[str, Any] | None = None,
                   queue_auto: bool = True) -> AsyncIterator[HubContext]:
    """Open the hub's parts; with ``run_queue`` also the queue manager and its timers.

    ``adapters`` replaces the instances built from ``[adapters.*]`` (tests);
    ``queue_auto=False`` starts the queue manager without its loop and timers,
    so a test drives ``scan()``/``expire()`` itself with a manual clock."""
    clock = clock or Clock()
    directory = directory or load_directory(settings)
    private_dir(settings.data_path)
    tokens = TokenAuthority(load_secret(settings.data_path),
                            known_organ=lambda organ: organ in directory)
    keys, trust = load_crypto(settings, directory)
    spool = open_spool(settings, clock)
    await spool.open()
    hub = HubContext(settings, directory, spool, tokens, clock, keys, trust)
    try:
        await hub.cpu.start()
        if run_queue:
            from adapters.registry import build_adapters
            from hub.cleanup.pressure import Pressure
            from hub.qmgr import QueueManager
            instances = adapters if adapters is not None else build_adapters(settings.adapters, hub)
            for adapter in instances.values():
                adapter.hub = hub
            hub.pressure = Pressure(hub)
            await hub.pressure.start()
            hub.qmgr = QueueManager(hub, instances)
            await hub.qmgr.start(schedule=queue_auto, dispatch=queue_auto)
        yield hub
    finally:
        if hub.qmgr is not None:
            await hub.qmgr.stop()
        if hub.pressure is not None:
            await hub.pressure.stop()
        for hook in reversed(hub.on_close):
            try:
                await hook()
            except Exception:  # one failing hook never keeps the spool open
                log.exception("close hook %r failed", hook)
        await spool.close()
        await hub.cpu.close()
