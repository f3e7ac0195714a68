"""Refusals in the audit log, summarised under a flood.

Where it sits: called by ``accept()`` (``hub.cleanup.accept``) for every
refusal below 500.  Each refusal of one code from one source (the
authenticated organisation) is written to the event log as a ``refused``
entry, the first ``refusal_audit_burst`` of each ``refusal_audit_window``;
past that, the window's further refusals of that (source, code) are only
counted, and one ``refused_summary`` entry is written when the window ends
(or the hub stops) with ``count``, the window's bounds and the last message.

So a flood of refusals costs the audit log at most burst + 1 entries per
source, code and window, and nothing is unaccounted for: every refusal is
either its own entry or counted in a summary.  The metrics count both.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from hub.errors import HubError

if TYPE_CHECKING:
    from hub.context import HubContext

log = logging.getLogger("hub.cleanup.refusals")


@dataclasses.dataclass(slots=True)
class _Held:
    origin: str
    count: int = 0
    message: str = ""


class RefusalAudit:
    """The refusals of the current window, by (source, code)."""

    def __init__(self, hub: "HubContext") -> None:
        self.hub = hub
        self.window = float(hub.settings.refusal_audit_window)
        self.burst = int(hub.settings.refusal_audit_burst)
        self._started: float | None = None
        self._seen: dict[tuple[str, str], int] = {}
        self._held: dict[tuple[str, str], _Held] = {}
        self._timer: asyncio.TimerHandle | None = None

    def record(self, organ: str, origin: str, exc: HubError, **extra: Any) -> None:
        now = self.hub.clock()
        if self._started is None or now >= self._started + self.window:
            self.flush()
            self._started = now
        key = (organ, exc.code)
        seen = self._seen[key] = self._seen.get(key, 0) + 1
        message = exc.message[:500]
        if seen <= self.burst:
            self._write("refused", organ=organ, code=exc.code, message=message, origin=origin,
                        **extra)
            return
        held = self._held.setdefault(key, _Held(origin))
        held.count += 1
        held.message = message
        if self._timer is None:
            wait = max(0.0, self._started + self.window - now)
            self._timer = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> "list[asyncio.Future[Any]]":
        """Write the window's summaries (if any) and start afresh."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held, self._seen = self._held, {}, {}
        since = self._started
        self._started = None
        until = self.hub.clock()
        written = []
        for (organ, code), h in held.items():
            log.warning("refused %d more %s from %s in %gs (summarised in the audit log)",
                        h.count, code, organ, self.window)
            fut = self._write("refused_summary", organ=organ, code=code, count=h.count,
                              origin=h.origin, message=h.message, since=since, until=until,
                              window=self.window)
            if fut is not None:
                written.append(fut)
        return written

    async def close(self) -> None:
        """At the hub's stop: the open window's summaries, committed before the last checkpoint."""
        for fut in self.flush():
            try:
                await fut
            except Exception:  # logged by the spool
                pass

    def _write(self, kind: str, **fields: Any) -> "asyncio.Future[Any] | None":
        try:
            fut = self.hub.spool.record_event(kind, **fields)
        except HubError:
            return None
        fut.add_done_callback(lambda f: f.exception())  # logged by the spool if it fails
        return fut
