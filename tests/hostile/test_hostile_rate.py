"""Under attack the hub keeps serving everyone else.

A real ``lienthong serve`` (default worker processes).  A normal client posts
small documents one after another for a few seconds, alone and then while
two attackers loop one hostile class; its accept rate under attack must stay
above a generous fraction of its rate alone, and /healthz must keep answering.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from hostile.hostile_cases import BY_NAME, MAU_A, edoc
from support import AN_BINH

WINDOW = 2.0       #: seconds each measurement lasts
FRACTION = 0.30    #: the normal client keeps at least this share of its rate
ATTACKERS = 1      #: closed-loop attackers, each as fast as the hub answers it
TRIES = 3          #: measurements per class before it is called a failure
#: Class -> the share the normal client keeps.  The classes of small bodies cost the
#: hub about what a normal document does; the last three are 0.6-20 MB bodies that a
#: closed-loop attacker on loopback pushes at 100+ MB/s, so what they measure is
#: the bytes moved (reading, spooling, refusing them) on a 2-core machine, not a
#: hot spot.  (Before issue 12's fixes, 100,000 attributes froze the hub for 50 s.)
#: huge-subject is a 200 KB body (a subject past its limit), refused at ~350/s by one
#: attacker: ~70 MB/s read and parsed, so it keeps a share between the two groups.
ATTACKS = {"huge-subject": 0.15, "many-namespaces": FRACTION, "deeper-than-libxml2": FRACTION,
           "many-attributes-100k": 0.05, "recipients-10001": 0.05, "many-elements-20MiB": 0.05}


async def normal_rate(session: aiohttp.ClientSession, base: str, token: str) -> tuple[float, float]:
    """Documents accepted per second over WINDOW, and the slowest /healthz answer."""
    accepted = 0
    worst_health = 0.0
    deadline = time.monotonic() + WINDOW
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml"}
    while time.monotonic() < deadline:
        async with session.post(f"{base}/v1/envelopes", data=edoc(), headers=headers) as resp:
            await resp.read()
            accepted += resp.status == 202
        started = time.monotonic()
        async with session.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        worst_health = max(worst_health, time.monotonic() - started)
    return accepted / WINDOW, worst_health


async def attacker(session: aiohttp.ClientSession, base: str, token: str, raw: bytes,
                   code: str, stop: asyncio.Event) -> int:
    sent = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml"}
    while not stop.is_set():
        async with session.post(f"{base}/v1/envelopes", data=raw, headers=headers) as resp:
            body = await resp.json()
            # its own code, or the rate limit cutting a flooding identity short
            assert body["error"]["code"] in (code, "rate_limited"), body
        sent += 1
    return sent


@pytest.mark.slow
async def test_a_normal_client_keeps_its_rate_while_attackers_loop(live_server) -> None:
    base, _data, mint = live_server
    token = mint(MAU_A, "agency")
    bad_token = mint(AN_BINH, "agency")  # a malicious agency beside an honest one
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await normal_rate(session, base, token)  # warm up: workers, caches
        alone, _ = await normal_rate(session, base, token)
        assert alone > 10, alone
        for name, fraction in ATTACKS.items():
            case = BY_NAME[name]
            raw = case.build()
            # A shared machine's noise can halve one 2-second window: a class
            # passes when one of TRIES measurements (each beside a fresh rate
            # alone) keeps the share.  A hot spot fails every one of them.
            for attempt in range(1, TRIES + 1):
                if attempt > 1:
                    alone, _ = await normal_rate(session, base, token)
                stop = asyncio.Event()
                attackers = [asyncio.create_task(attacker(session, base, bad_token, raw,
                                                          case.code, stop))
                             for _ in range(ATTACKERS)]
                try:
                    under, worst_health = await normal_rate(session, base, token)
                finally:
                    stop.set()
                    sent = await asyncio.gather(*attackers)
                print(f"{name} (try {attempt}): {under:.0f}/s under attack ({sum(sent)} attacks), "
                      f"{alone:.0f}/s alone, slowest /healthz {worst_health * 1000:.0f} ms")
                assert sum(sent) >= 1, (name, sent)
                if under >= fraction * alone:
                    break
            assert under >= fraction * alone, (f"{name}: {under:.0f}/s under attack, "
                                               f"{alone:.0f}/s alone, {TRIES} tries")
            assert worst_health < 1.0, (name, worst_health)
