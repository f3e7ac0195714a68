"""A stub adapter that records what it is given and fails when told to.

Like dramatiq's StubBroker: tests (and demos) configure it as a route and
then look at ``delivered``; ``fail_times`` makes the first N attempts of each
delivery defer, ``refuse`` makes every attempt a permanent refusal, ``delay``
makes each attempt take that long.  Options come from hub.toml or are set on
the instance directly by a test.
"""
from __future__ import annotations

import asyncio
from typing import Any

from adapters.base import Adapter, DeliveryRequest, Outcome


class StubAdapter(Adapter):
    def __init__(self, name: str, options: dict[str, Any], hub: Any = None) -> None:
        super().__init__(name, options, hub)
        self.fail_times = int(options.get("fail_times", 0))
        self.refuse = bool(options.get("refuse", False))
        self.delay = float(options.get("delay", 0.0))
        self.delivered: list[DeliveryRequest] = []
        self.attempts: list[DeliveryRequest] = []
        self._failures: dict[int, int] = {}

    async def deliver(self, req: DeliveryRequest) -> Outcome:
        self.attempts.append(req)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.refuse:
            return Outcome.refused("stub told to refuse")
        failed = self._failures.get(req.delivery_id, 0)
        if failed < self.fail_times:
            self._failures[req.delivery_id] = failed + 1
            return Outcome.defer(f"stub failure {failed + 1} of {self.fail_times}")
        self.delivered.append(req)
        return Outcome.delivered("stub accepted")
