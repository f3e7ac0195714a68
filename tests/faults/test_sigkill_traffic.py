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

KILLS = 3
RUN_BEFORE_KILL = (1.0, 2.5)   #: seconds of traffic before each kill, drawn at random


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
                # after the last restart the traffic goes on for a while, then settles
                before = traffic.accepted_202
                await asyncio.sleep(RUN_BEFORE_KILL[0])
                resumed.append(traffic.accepted_202 - before)
                await traffic.settle(client)
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
    print(f"\nsigkill x{KILLS}: {figures}, 202s between kills {resumed}, "
          f"{len(COMMUNES)}+{len(OFFICES)} units, {time.monotonic() - t0:.1f} s")
