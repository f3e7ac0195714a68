"""Rate limits at the HTTP edge: a token bucket per client address and per identity.

Where it sits: in front of every route.  The address's bucket is taken in
``ratelimit_middleware``, before the token is even read; the identity's
(organisation and role; a relay identity has a limit of its own,
``rate_limit_per_relay``) in ``hub.api.base.identity``, right after the token
is verified and before any body is read or parsed.  So a flood costs the hub
one dictionary lookup per request, not a parse, a signature check or an
audit entry.

A bucket holds up to ``burst`` requests and refills at ``rate`` per second;
a request that finds it empty is answered ``429 rate_limited`` with
``Retry-After`` (whole seconds until the bucket has a request again).  A
rate of 0 turns that limit off.  ``GET /healthz`` and ``GET /readyz`` are
never limited (monitors poll them).

At most ``_MAX_KEYS`` buckets are kept per limit; when that many are live,
the least recently used goes (it was the quietest, so forgetting it only
forgives a client that was not flooding).
"""
from __future__ import annotations

import collections
import logging
import math
import time
from typing import Any, Callable

from aiohttp import web

from hub.config import Settings
from hub.errors import RateLimitedError

log = logging.getLogger("hub.api.ratelimit")

_MAX_KEYS = 65536
_UNLIMITED = frozenset({"/healthz", "/readyz"})


class TokenBucket:
    """Buckets of one limit, by key."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self._clock = clock
        self._buckets: collections.OrderedDict[Any, tuple[float, float]] = collections.OrderedDict()
        self.limited = 0  # requests refused, for the metrics

    def take(self, key: Any) -> float:
        """0 if ``key`` may make a request now (and takes it), else seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            wait, tokens = 0.0, tokens - 1.0
        else:
            wait = (1.0 - tokens) / self.rate
            self.limited += 1
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > _MAX_KEYS:
            self._buckets.popitem(last=False)
        return wait


class Limits:
    """The app's limits: per address, per identity, and per relay identity."""

    def __init__(self, settings: Settings) -> None:
        self.address = TokenBucket(settings.rate_limit_per_address, settings.rate_limit_address_burst)
        self.identity = TokenBucket(settings.rate_limit_per_identity,
                                    settings.rate_limit_identity_burst)
        #: A relay (a peer hub, the platform's gateway) speaks for a whole
        #: district or province: one agency's limit would cap the pair of hubs.
        self.relay = TokenBucket(settings.rate_limit_per_relay, settings.rate_limit_relay_burst)

    @staticmethod
    def check(bucket: TokenBucket, key: Any, what: str) -> None:
        wait = bucket.take(key)
        if wait:
            retry = max(1, math.ceil(wait))
            raise RateLimitedError(f"too many requests from this {what}: slow down "
                                   f"(limit {bucket.rate:g}/s, burst {bucket.burst})",
                                   details={"retry_after": retry})


LIMITS = web.AppKey("limits", Limits)


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: Callable[[web.Request], Any]
                               ) -> web.StreamResponse:
    limits = request.app.get(LIMITS)
    if limits is not None and request.path not in _UNLIMITED:
        limits.check(limits.address, request.remote, "address")
    return await handler(request)


def check_identity(request: web.Request, organ: str, role: str) -> None:
    limits = request.app.get(LIMITS)
    if limits is not None:
        if role == "relay":
            limits.check(limits.relay, organ, "relay identity")
        else:
            limits.check(limits.identity, (organ, role), "identity")
