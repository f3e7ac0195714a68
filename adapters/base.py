"""The one interface every delivery adapter implements.

Like Postfix's delivery agents, an adapter answers with one of two outcomes:
*final* (``delivered``, or ``refused`` for good) or *defer* (try later, with
a reason).  Temporary trouble may also be raised as
``TemporaryDeliveryError``; a permanent refusal as ``PermanentDeliveryError``.
Anything else an adapter raises counts as temporary.

Adapters are registered by entry point (group ``lienthong.adapters``) and run
as named instances configured in ``[adapters.<name>]`` of hub.toml; the
instance name is the route name in the directory.  Hooks on the base class
do nothing by default; a failing hook is logged and never stops a delivery.
"""
from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any


class Verdict(str, enum.Enum):
    #: The destination has the document.
    DELIVERED = "delivered"
    #: The destination refused it for good; do not try again.
    REFUSED = "refused"
    #: Temporary trouble; try again after a backoff.
    DEFER = "defer"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str = ""

    @classmethod
    def delivered(cls, reason: str = "") -> "Outcome":
        return cls(Verdict.DELIVERED, reason)

    @classmethod
    def refused(cls, reason: str) -> "Outcome":
        return cls(Verdict.REFUSED, reason)

    @classmethod
    def defer(cls, reason: str) -> "Outcome":
        return cls(Verdict.DEFER, reason)


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """One delivery: the document's original bytes and where they go."""

    message_id: str
    delivery_id: int
    sender: str
    recipient: str
    route: str
    kind: str
    #: The original bytes; above ``spool.payloads.LARGE`` the ``Path`` of the
    #: spool's payload file instead (read it, never change it).
    raw: bytes | Path
    attempt: int


class Adapter:
    """Base class: subclasses set ``pull`` or implement ``deliver``."""

    #: Pull-mode routes (the mailbox) are not dispatched: recipients fetch.
    pull = False

    def __init__(self, name: str, options: dict[str, Any], hub: Any = None) -> None:
        self.name = name
        self.options = options
        self.hub = hub

    async def start(self) -> None:
        """Open connections; called once when the hub starts."""

    async def stop(self) -> None:
        """Close connections; called once when the hub stops."""

    async def deliver(self, req: DeliveryRequest) -> Outcome:
        raise NotImplementedError

    # hooks: do nothing unless overridden
    async def before_delivery(self, req: DeliveryRequest) -> None:
        """Called before each attempt."""

    async def after_delivery(self, req: DeliveryRequest, outcome: Outcome) -> None:
        """Called after each attempt with its outcome."""
