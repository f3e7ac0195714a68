"""Quarantine of a delivery whose payload file no longer matches its digest.

Payload files are immutable once written and addressed by their SHA-256, so
a file that hashes to something else was changed behind the hub's back (a
failing disk, a careless operator).  Its bytes are never delivered nor
served.  The reader (the queue manager's attempt, or a mailbox fetch) hands
the ``PayloadCorruptError`` here: the delivery moves to ``corrupt`` with the
reason, and operators are told three ways — an ERROR line on ``hub.spool``,
an event of its own (``payload_corrupt``, in ``lienthong tail`` and the
audit chain) and the ``lienthong_payloads_corrupt_total`` metric (fed by
that event).  A delivery in ``corrupt`` is never retried; restore the file
(from a backup: same name, same digest) and re-send, or drop the document.
"""
from __future__ import annotations

import logging
from typing import Sequence

from hub.context import HubContext
from hub.errors import PayloadCorruptError
from spool.states import State

log = logging.getLogger("hub.spool")


async def quarantine(hub: HubContext, exc: PayloadCorruptError, *, delivery_id: int,
                     message_id: str, organ: str, expected: Sequence[State], where: str,
                     owned_by: str | None = None) -> bool:
    """Move the delivery to ``corrupt`` and tell operators; False when it had
    left ``expected`` meanwhile (quarantined already: the log line only)."""
    reason = f"payload corrupt on disk: {exc.message}"
    moved = await hub.spool.transition(delivery_id, expected, State.CORRUPT, last_error=reason,
                                       reason=reason, owned_by=owned_by)
    log.error("%s delivery %d to %s: %s%s", message_id, delivery_id, organ, exc.message,
              "; the delivery is quarantined (state corrupt)" if moved else "")
    if moved:
        await hub.spool.record_event("payload_corrupt", message_id=message_id, organ=organ,
                                     delivery=delivery_id, where=where, **exc.details)
    return moved
