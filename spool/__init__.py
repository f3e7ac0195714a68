"""The durable store of the hub: the interface (``spool.base``), states,
records, and the backends (``spool.sqlite``; PostgreSQL beside it later)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from spool.base import Spool
from spool.records import (AddedDelivery, Event, NewDelivery, NewEnvelope, NewLink, StatusRecord,
                           StoreResult)
from spool.states import FINAL_STATES, PENDING_STATES, State

if TYPE_CHECKING:
    from hub.config import Settings

__all__ = ["AddedDelivery", "Event", "NewDelivery", "NewEnvelope", "NewLink", "StatusRecord", "StoreResult", "Spool",
           "State", "FINAL_STATES", "PENDING_STATES", "open_spool"]


def open_spool(settings: "Settings", clock: Callable[[], float]) -> Spool:
    """The spool the settings ask for (not yet opened)."""
    from spool.sqlite.backend import SqliteSpool
    return SqliteSpool(settings.data_path, inline_limit=settings.inline_payload_limit,
                       commit_max_wait=settings.commit_max_wait,
                       commit_max_batch=settings.commit_max_batch,
                       maximal_lifetime=settings.maximal_lifetime, node_id=settings.node_id,
                       clock=clock)
