"""Backpressure: stop taking new envelopes before the spool or the disk is full.

While the stored payloads exceed ``spool_quota`` or the free space under
``data_dir`` falls below ``min_free_space``, cleanup refuses new envelopes
with ``503`` and ``Retry-After`` (``BackpressureError``); everything already
accepted stays and keeps flowing — deliveries, acknowledgements and statuses
about known documents are not new work for the disk.  The figures are
re-read every few seconds in the background, so the check on the hot path
is one attribute read.
"""
from __future__ import annotations

import asyncio
import logging
import shutil

from hub.context import HubContext

log = logging.getLogger("hub.cleanup.pressure")

REFRESH_SECONDS = 5.0
RETRY_AFTER_SECONDS = 60


class Pressure:
    def __init__(self, hub: HubContext) -> None:
        self.hub = hub
        self.reason: str | None = None
        self.retry_after = RETRY_AFTER_SECONDS
        self.spool_bytes = 0
        self.free_bytes = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="pressure")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception:
                log.exception("could not measure the spool")

    async def refresh(self) -> str | None:
        s = self.hub.settings
        self.spool_bytes = await self.hub.spool.payload_bytes()
        self.free_bytes = (await asyncio.to_thread(shutil.disk_usage, s.data_path)).free
        reason = None
        if self.spool_bytes > s.spool_quota:
            reason = f"spool holds {self.spool_bytes} bytes, over spool_quota ({s.spool_quota})"
        elif self.free_bytes < s.min_free_space:
            reason = (f"only {self.free_bytes} bytes free under {s.data_path}, below "
                      f"min_free_space ({s.min_free_space})")
        if reason != self.reason:
            if reason:
                log.warning("refusing new envelopes: %s", reason)
            else:
                log.info("accepting new envelopes again")
        self.reason = reason
        return reason
