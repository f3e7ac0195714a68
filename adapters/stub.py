"""A stub adapter that records what it is given and fails when told to.

Like dramatiq's StubBroker: tests (and demos) configure it as a route and
then look at ``delivered``; ``fail_times`` makes the first N attempts of each
delivery defer, ``refuse`` makes every attempt a permanent refusal, ``delay``
makes each attempt take that long.  Options come from hub.toml or are set on
the instance directly by a test.
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from adapters.base import Adapter, DeliveryRequest, Duration, Outcome


@dataclasses.dataclass(frozen=True)
class StubOptions:
    #: The first N attempts of each delivery defer.
    fail_times: int = 0
    #: Every attempt is a permanent refusal.
    refuse: bool = False
    #: Each attempt takes this long.
    delay: Duration = Duration(0.0)


class StubAdapter(Adapter):
    Options = StubOptions

    def __init__(self, name: str, options: Any = None) -> None:
        super().__init__(name, options)
        self.fail_times = self.options.fail_times
        self.refuse = self.options.refuse
        self.delay = self.options.delay
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
