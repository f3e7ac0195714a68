"""The states of one delivery (one row per document and recipient).

    queued ──► active ──► delivered
      ▲          │
      │          ├──► deferred ──(backoff elapsed)──► active
      │          └──► failed     (permanent refusal or lifetime exceeded)
      └── hold ◄─┘ (operator; release puts it back to queued)
    corrupt: quarantined after crashing the hub repeatedly; never retried.

Deliveries on the ``mailbox`` route are pulled by their recipient: they wait
in ``queued`` until the recipient acknowledges them (``delivered``).
A change of state is one guarded update (``WHERE id = ? AND state = ?``).
"""
from __future__ import annotations

import enum


class State(str, enum.Enum):
    #: Waiting for dispatch (or, on the mailbox route, for the recipient's pull).
    QUEUED = "queued"
    #: Leased by the queue manager; an adapter is delivering it now.
    ACTIVE = "active"
    #: The destination has it (acknowledged by the mailbox owner or the adapter).
    DELIVERED = "delivered"
    #: The last attempt failed temporarily; retried after ``next_attempt_at``.
    DEFERRED = "deferred"
    #: Permanently refused, or ``maximal_lifetime`` passed; the sender was told.
    FAILED = "failed"
    #: Stopped by an operator until released.
    HOLD = "hold"
    #: Quarantined: it was active while the hub crashed too many times.
    CORRUPT = "corrupt"

    def __str__(self) -> str:
        return self.value


#: States a delivery never leaves by itself.
FINAL_STATES = frozenset({State.DELIVERED, State.FAILED, State.CORRUPT})
#: States that count as "in the queue" (depth, quota, lifetime expiry).
PENDING_STATES = frozenset({State.QUEUED, State.ACTIVE, State.DEFERRED, State.HOLD})


#: What each operator action may move, and where to.
OPERATOR_MOVES: dict[str, tuple[tuple[State, ...], State]] = {
    "hold": ((State.QUEUED, State.DEFERRED), State.HOLD),
    "release": ((State.HOLD,), State.QUEUED),
    "retry": ((State.QUEUED, State.DEFERRED), State.QUEUED),
    "drop": ((State.QUEUED, State.DEFERRED, State.HOLD), State.FAILED),
}
