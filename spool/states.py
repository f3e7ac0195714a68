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

Every move there is (a ``state`` event of the log names the new state; the
old one is the delivery's previous ``state`` event, or ``queued`` when its
document was accepted).  tests/hub/test_delivery_machine.py reads this list
and checks the log of random runs against it:

    queued   -> active      leased for an attempt
    queued   -> delivered   acknowledged by the mailbox owner
    queued   -> queued      retried by an operator (due now)
    queued   -> hold        held by an operator
    queued   -> failed      dropped by an operator, or maximal_lifetime passed
    active   -> delivered   the adapter delivered it
    active   -> deferred    the adapter answered defer
    active   -> failed      the adapter refused it permanently
    active   -> queued      the lease handed back (clean stop), taken back after it
                            expired, or recovered after an unclean stop
    active   -> corrupt     recovered after its ``crash_limit``-th unclean stop
    deferred -> active      leased again once its backoff elapsed
    deferred -> queued      retried by an operator
    deferred -> hold        held by an operator
    deferred -> failed      dropped by an operator, or maximal_lifetime passed
    hold     -> queued      released by an operator
    hold     -> failed      dropped by an operator (held ones never expire)
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
