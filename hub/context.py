"""The running hub's parts, in one typed container.

``hub.node.open_hub(settings)`` builds a ``HubContext`` and starts its parts in
order (spool → cpu → qmgr → ingress → receipts → audit); the HTTP edge
(``hub.api``) and the command line read it, so ``lienthong queue list`` sees
exactly what the server sees.  This module imports no stage: the stages'
types are named for the type checker only, so dependencies still point one
way (stages → context, never back).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Awaitable, Callable

if TYPE_CHECKING:
    from adapters.base import Adapter
    from hub.audit.auditor import Auditor
    from hub.auth import TokenAuthority
    from hub.cleanup.cpu import CpuPool
    from hub.cleanup.notices import NoticeIssuer
    from hub.cleanup.pressure import Pressure
    from hub.cleanup.refusals import RefusalAudit
    from hub.config import Settings
    from hub.crypto.keys import HubKeys, TrustStore
    from hub.directory import Directory
    from hub.ingress import IngestSupervisor
    from hub.metrics import Metrics
    from hub.qmgr import QueueManager
    from hub.receipts.issuer import ReceiptIssuer
    from spool.base import Spool


@dataclasses.dataclass(eq=False)
class HubContext:
    settings: "Settings"
    directory: "Directory"
    spool: "Spool"
    tokens: "TokenAuthority"
    clock: Callable[[], float]
    keys: "HubKeys"
    trust: "TrustStore"
    cpu: "CpuPool"
    #: The adapter instances by route name (``mailbox`` always among them).
    adapters: "dict[str, Adapter]" = dataclasses.field(default_factory=dict)
    qmgr: "QueueManager | None" = None
    pressure: "Pressure | None" = None
    ingest: "IngestSupervisor | None" = None
    receipts: "ReceiptIssuer | None" = None
    notices: "NoticeIssuer | None" = None
    auditor: "Auditor | None" = None
    metrics: "Metrics | None" = None
    #: Refusals into the audit log, one by one or summarised under a flood.
    refusals: "RefusalAudit | None" = None
    #: Routes the directory names that no adapter instance serves (warned at start).
    missing_routes: list[str] = dataclasses.field(default_factory=list)
    #: Run at close, newest first, after the queue manager has stopped and
    #: before the spool closes (the audit's last checkpoint).
    on_close: list[Callable[[], Awaitable[Any]]] = dataclasses.field(default_factory=list)

    def wake_qmgr(self, recipients: list[dict[str, str]]) -> None:
        """New deliveries were committed: dispatch push routes now, not at the next sweep."""
        if self.qmgr is not None and any(r["route"] != "mailbox" for r in recipients):
            self.qmgr.wake()

    @property
    def hub_id(self) -> str:
        return self.directory.hub.id
