"""The durable store of the hub: states, records and backends."""
from __future__ import annotations

from typing import Callable

from spool.records import Event, NewDelivery, NewEnvelope, StatusRecord, StoreResult
from spool.sqlite.backend import SqliteSpool
from spool.states import FINAL_STATES, PENDING_STATES, State

__all__ = ["Event", "NewDelivery", "NewEnvelope", "StatusRecord", "StoreResult", "SqliteSpool",
           "State", "FINAL_STATES", "PENDING_STATES", "open_spool"]


def open_spool(settings, clock: Callable[[], float]) -> SqliteSpool:  # type: ignore[no-untyped-def]
    """The spool the settings ask for (not yet opened)."""
    return SqliteSpool(settings.data_path, inline_limit=settings.inline_payload_limit,
                       commit_max_wait=settings.commit_max_wait,
                       commit_max_batch=settings.commit_max_batch,
                       maximal_lifetime=settings.maximal_lifetime, clock=clock)
