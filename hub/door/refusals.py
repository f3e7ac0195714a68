"""The door's refusals in the audit log, bounded so that a flood cannot fill it.

Every refusal the door answers (``status: FAIL``) becomes a ``refused`` event
(``origin: door``) through ``record``, except the refusals of cleanup's
``accept``, which records its own.  A misconfigured client retrying in a
loop, or someone probing the door, must not grow the hash-chained log by one
row per request, so two budgets bound what is written:

* per source and code (remote address, ErrorCode): ``PER_KEY`` events a
  minute; and
* for the whole door: ``TOTAL`` events a minute.

What a budget leaves out is counted, and the next event written for that
source and code carries ``suppressed`` (how many were left out before it),
so the log still says how many there were.  The hub's log gets one line per
event written, never the request's headers (a secret never reaches either).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from spool.base import Spool

log = logging.getLogger("hub.door")

WINDOW = 60.0
PER_KEY = 10
TOTAL = 120
#: Sources tracked at once; past this the table starts afresh (the total budget still holds).
MAX_KEYS = 4096


def printable(text: object, limit: int = 200) -> str:
    """Text from outside, safe for a log line or an event (escaped, bounded)."""
    shown = ascii(str(text))[1:-1]
    return shown if len(shown) <= limit else shown[:limit] + "..."


class RefusalLog:
    def __init__(self, spool: Spool, clock: Callable[[], float]) -> None:
        self._spool = spool
        self._clock = clock
        #: (remote, code) -> [window start, written in window, suppressed since last written]
        self._keys: dict[tuple[str, str], list[float]] = {}
        self._total_window = float("-inf")
        self._total = 0
        self.suppressed = 0

    def _allow(self, key: tuple[str, str], now: float) -> tuple[bool, int]:
        if now - self._total_window >= WINDOW:
            self._total_window, self._total = now, 0
        if len(self._keys) >= MAX_KEYS and key not in self._keys:
            self._keys.clear()
        slot = self._keys.setdefault(key, [now, 0.0, 0.0])
        if now - slot[0] >= WINDOW:
            slot[0], slot[1] = now, 0.0
        if slot[1] >= PER_KEY or self._total >= TOTAL:
            slot[2] += 1
            self.suppressed += 1
            return False, 0
        slot[1] += 1
        self._total += 1
        before, slot[2] = int(slot[2]), 0.0
        return True, before

    def record(self, *, code: str, message: str, remote: str, organ: str | None = None,
               system_id: str | None = None, operation: str = "", verified: bool = False) -> None:
        allowed, suppressed = self._allow((remote, code), self._clock())
        if not allowed:
            return
        detail: dict[str, object] = {"code": code, "message": printable(message, 500),
                                     "origin": "door", "operation": operation, "remote": remote,
                                     "verified": verified}
        if system_id is not None:
            detail["system_id"] = printable(system_id, 100)
        if suppressed:
            detail["suppressed"] = suppressed
        log.info("door refused %s from %s (%s): %s%s", operation, remote,
                 organ or printable(system_id or "-", 100), code,
                 f" ({suppressed} more not recorded)" if suppressed else "")
        try:
            fut = self._spool.record_event("refused", organ=organ, **dict[str, Any](detail))
        except Exception:  # noqa: BLE001 - the answer still goes out; the spool logs its trouble
            log.exception("could not record a door refusal")
            return
        fut.add_done_callback(lambda f: f.exception())
