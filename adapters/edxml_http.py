"""Push delivery of edXML over HTTP: peer district hubs, the provincial platform,
agency systems that can be reached.

The wire form is the original envelope with the hub's TraceHeader and hop
signature appended (``HubContext.wire_form``); the spool keeps the original.
Payloads above ``spool.payloads.LARGE`` are signed file to file and sent
from the file, so a 100 MB document is never held whole in memory.
The request is ``POST <url>`` with ``Content-Type: application/xml``, a
bearer token if configured, and ``X-Lienthong-Message-Id`` so the receiver
can deduplicate (delivery is at-least-once).

Outcomes: 2xx → delivered; 408, 425, 429, 5xx, timeouts and connection
errors → defer; any other 4xx → permanent refusal, with the receiver's
error text as the reason.

Options (``[adapters.<name>]``): ``url`` (required), ``token``, ``timeout``
(default ``"60s"``), ``sign`` (default true: add the hop signature).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import aiohttp

from adapters.base import Adapter, DeliveryRequest, Duration, Outcome, Secret

_RETRYABLE = {408, 425, 429}


@dataclasses.dataclass(frozen=True)
class EdxmlHttpOptions:
    #: Where envelopes are POSTed.
    url: str
    #: A bearer token for the receiver, if it wants one.
    token: Secret | None = None
    #: The whole request's time limit.
    timeout: Duration = Duration(60.0)
    #: Add the hub's TraceHeader and hop signature.
    sign: bool = True


class EdxmlHttpAdapter(Adapter):
    Options = EdxmlHttpOptions

    def __init__(self, name: str, options: Any = None) -> None:
        super().__init__(name, options)
        self.url = self.options.url
        self.token = self.options.token
        self.timeout = self.options.timeout
        self.sign = getattr(self.options, "sign", True)  # subclasses always sign
        self.log = logging.getLogger(f"hub.adapter.{name}")
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def endpoint(self) -> str:
        """Where envelopes are POSTed."""
        return self.url

    def headers(self, req: DeliveryRequest) -> dict[str, str]:
        headers = {"Content-Type": "application/xml", "X-Lienthong-Message-Id": req.message_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def deliver(self, req: DeliveryRequest) -> Outcome:
        if self._session is None:
            await self.start()
        assert self._session is not None
        body: bytes | Path = req.raw
        if self.sign and self.port is not None:
            body = await self.port.wire_form(req.raw)
        url = self.endpoint()
        # A large payload goes from its file (aiohttp streams it); a wire form
        # written for this attempt is removed after it.
        data: Any = open(body, "rb") if isinstance(body, Path) else body
        try:
            async with self._session.post(url, data=data, headers=self.headers(req)) as resp:
                text = (await resp.text(errors="replace"))[:2000]
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return Outcome.defer(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            if isinstance(body, Path):
                data.close()
                if body != req.raw:
                    body.unlink(missing_ok=True)
        return self.judge(req, status, text)

    def judge(self, req: DeliveryRequest, status: int, text: str) -> Outcome:
        """The outcome of an answer: 2xx delivered, 408/425/429/5xx defer, other 4xx refused."""
        if 200 <= status < 300:
            self.log.info("%s delivered to %s via %s (%d)", req.message_id, req.recipient,
                          self.url, status)
            return Outcome.delivered(f"HTTP {status}")
        if status in _RETRYABLE or status >= 500:
            return Outcome.defer(f"HTTP {status}: {text[:500]}")
        return Outcome.refused(f"HTTP {status}: {text[:500]}")
