"""Fault (a): SIGKILL at random instants during two-way traffic, a real ``lienthong serve``.

Three communes and three offices send each other documents through the
mailbox (and some to a unit of a peer district, pushed by an ``edxml_http``
route to a receiver on 127.0.0.1), fetch, acknowledge and answer with a
status 03, all the time.  Meanwhile the hub is killed with SIGKILL three
times, each at a random instant, and started again on the same data.  After
each restart the traffic resumes (more documents are answered 202); at the
end ``TwoWay.check`` proves nothing acknowledged was lost, nothing reached a
mailbox twice, every push reached the peer at least once (which can
deduplicate by ``X-Lienthong-Message-Id``), and the audit chain verifies.

CI kills three times.  ``make soak`` runs the same test longer, through the
environment: ``FAULT_KILLS`` (kills, 3), ``FAULT_KILL_EVERY`` (the range the
seconds of traffic before each kill are drawn from, ``1.0,2.5``) and
``FAULT_MIN_DOCUMENTS`` (documents, statuses not counted, that must have
been accepted before the traffic stops, 0); ``FAULT_SEED`` picks the instants.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import aiohttp
import pytest
from faults.twoway import COMMUNES, OFFICES, UNITS, TwoWay, hub_config
from serve import Served
from traffic import Client

pytestmark = pytest.mark.slow


def _seconds_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


KILLS = int(os.environ.get("FAULT_KILLS", "3"))
#: seconds of traffic before each kill, drawn at random
RUN_BEFORE_KILL = _seconds_range(os.environ.get("FAULT_KILL_EVERY", "1.0,2.5"))
#: documents accepted (answered 202) before the traffic stops
MIN_DOCUMENTS = int(os.environ.get("FAULT_MIN_DOCUMENTS", "0"))
#: traffic that accepted nothing for this long has stalled: fail rather than wait
STALLED = 60.0


async def test_sigkill_at_random_instants_during_two_way_traffic(tmp_path, peer):
    t0 = time.monotonic()
    rnd = random.Random(int(os.environ.get("FAULT_SEED", "1217")))
    server = Served(tmp_path / "var", log=tmp_path / "hub.log", config=hub_config(peer),
                    start_timeout=30)
    try:
        await server.start_async()
        traffic = TwoWay(server, peer, seed=rnd.randrange(1 << 30))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            client = Client(http, server.url, server.data)
            workers = [asyncio.create_task(traffic.sender(client, u)) for u in UNITS] + \
                      [asyncio.create_task(traffic.reader(client, u)) for u in UNITS]
            resumed = []
            try:
                for _kill in range(KILLS):
                    before = traffic.accepted_202
                    await asyncio.sleep(rnd.uniform(*RUN_BEFORE_KILL))  # the random instant
                    assert not any(w.done() for w in workers), [w.exception() for w in workers
                                                               if w.done()]
                    os.kill(server.pid, signal.SIGKILL)
                    await asyncio.to_thread(server.kill)  # reap it
                    resumed.append(traffic.accepted_202 - before)
                    await server.start_async()
                # after the last restart the traffic goes on for a while (and until
                # enough documents were accepted), then settles
                before = traffic.accepted_202
                await asyncio.sleep(RUN_BEFORE_KILL[0])
                await enough_documents(traffic)
                resumed.append(traffic.accepted_202 - before)
                t_settle = time.monotonic()
                await traffic.settle(client)
                t_settle = time.monotonic() - t_settle
            finally:
                traffic.sending = traffic.reading = False
                await asyncio.gather(*workers, return_exceptions=True)
        # Then: traffic went on between every two kills and after the last restart
        assert all(n > 0 for n in resumed), f"202s between the kills: {resumed}"
        assert server.stop() == 0, server.log_tail()
        figures = traffic.check(server.data)
    finally:
        server.close()
    assert figures["statuses"] > 0 and figures["push"] > 0, figures
    assert sum(figures["client_errors"].values()) > 0, "no request died with the hub"
    documents = figures["envelopes"] - figures["statuses"]
    assert documents >= MIN_DOCUMENTS, f"{documents} documents accepted, not {MIN_DOCUMENTS}"
    print(f"\nsigkill x{KILLS}: {documents} documents, {figures}, 202s between kills "
          f"{resumed}, {len(COMMUNES)}+{len(OFFICES)} units, {time.monotonic() - t0:.1f} s "
          f"({t_settle:.1f} s of them settling)")


async def enough_documents(traffic: TwoWay) -> None:
    """Wait until ``MIN_DOCUMENTS`` documents were answered 202 (the traffic goes on)."""
    last, since = traffic.documents_202, time.monotonic()
    while traffic.documents_202 < MIN_DOCUMENTS:
        await asyncio.sleep(0.5)
        if traffic.documents_202 > last:
            last, since = traffic.documents_202, time.monotonic()
        assert time.monotonic() - since < STALLED, (
            f"no document accepted for {STALLED:.0f} s, {last} of {MIN_DOCUMENTS}")
