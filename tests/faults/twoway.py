"""Two-way traffic against a real hub, for the fault tests (and nothing else).

Communes and offices send documents to each other through the mailbox and to
a unit of a peer district (a push route, ``peer.lucyen``, an ``edxml_http``
instance posting to ``traffic.Peer``); every unit lists its inbox, fetches
each item (checking the bytes against what was sent), acknowledges it and
answers each document with a status 03.  Workers survive the hub dying under
them: a request without an answer is recorded (``Doc.status`` None) and the
worker carries on; ``settle()`` re-sends those once the hub is back (a
committed one answers 200 with its id, one that was not 202).

``check()`` then proves the fault tests' promise: every envelope answered
``200``/``202`` is in the spool with one delivery per recipient, every
delivery ended ``delivered``; no mailbox showed an item again after its
acknowledgement was answered, and each delivery became delivered once in the
event log (at most once per mailbox); the peer saw every message id at least
once, each POST carrying ``X-Lienthong-Message-Id`` (at least once per push
destination, and it can deduplicate by that header); the event chain and
``lienthong audit verify --db`` pass.
"""
from __future__ import annotations

import asyncio
import collections
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from serve import Served
from support import AN_BINH, MAU_A, REPO, VP_UBND
from traffic import Client, Doc, Peer, check_event_chain, open_ro

from hub.edxml import samples

COMMUNES = (MAU_A, AN_BINH, "000.03.48.H63")
OFFICES = (VP_UBND, "000.32.48.H63", "000.33.48.H63")
PEER_ORGAN = "000.01.44.H63"   # a unit of Lục Yên: route peer.lucyen, by the bundled [[rule]]
UNITS = COMMUNES + OFFICES
DOC_SIZE = 3000
BIG_SIZE = 80 * 1024           #: over inline_payload_limit: a payload file
PAUSE = 0.05                   #: a worker's breath between rounds (and after a refused connection)


def hub_config(peer: Peer, extra: str = "") -> str:
    """hub.toml for the fault tests: no rate limits (the load comes from one address),
    quick retries, no worker processes (a SIGKILL leaves no orphans), the push route."""
    return f"""rate_limit_per_address = 0
rate_limit_per_identity = 0
cpu_workers = 0
minimal_backoff = "100ms"
maximal_backoff = "1s"
queue_run_delay = "200ms"
crash_limit = 50
{extra}
[adapters."peer.lucyen"]
class = "edxml_http"
url = "{peer.url}"
timeout = "3s"
"""


class TwoWay:
    def __init__(self, server: Served, peer: Peer, seed: int = 12) -> None:
        self.server = server
        self.peer = peer
        self.rnd = random.Random(seed)
        self.docs: list[Doc] = []
        self.by_sha: dict[str, Doc] = {}
        self.answered: set[tuple[str, str]] = set()   #: (organ, sha) answered with a 03
        self.acked: set[tuple[str, str]] = set()      #: (organ, message id) ack answered 200
        self.again: list[tuple[str, str]] = []        #: listed again after that: a violation
        self.wrong_bytes: list[tuple[str, str]] = []
        self.accepted_202 = 0
        self.documents_202 = 0                        #: of them documents (not statuses)
        #: delivered, as the hub says, without an ack answered here (yet)
        self.seen_delivered: set[tuple[str, str]] = set()
        self.errors = collections.Counter[str]()
        self.sending = True
        self.reading = True
        self.number = 0

    # -- the envelopes ----------------------------------------------------------------

    def new_doc(self, sender: str) -> Doc:
        self.number += 1
        others = OFFICES if sender in COMMUNES else COMMUNES
        recipients = list(self.rnd.sample(others, self.rnd.randint(1, 2)))
        if self.rnd.random() < 0.3:
            recipients.append(PEER_ORGAN)
        size = BIG_SIZE if self.number % 15 == 0 else DOC_SIZE
        doc = Doc(self.number, sender, tuple(recipients),
                  samples.edoc(sender, recipients, self.number, size=size))
        return self.add(doc)

    def add(self, doc: Doc) -> Doc:
        self.docs.append(doc)
        self.by_sha[doc.sha256] = doc
        return doc

    def answer(self, organ: str, doc: Doc) -> Doc:
        """The status 03 ``organ`` sends about ``doc`` (the same bytes every time)."""
        self.number += 1
        raw = samples.status(organ, doc.sender, doc.document_id, "03",
                             description="Đã tiếp nhận")
        return self.add(Doc(self.number, organ, (doc.sender,), raw, kind="status",
                            about=doc.document_id))

    async def submit(self, client: Client, doc: Doc) -> None:
        await client.submit(doc)
        if doc.status == 202:
            self.accepted_202 += 1
            self.documents_202 += doc.kind == "edoc"
        elif doc.status is None:
            self.errors[doc.error or "?"] += 1
        elif doc.status != 200:
            raise AssertionError(f"the hub refused {doc.kind} {doc.number} from {doc.sender}: "
                                 f"{doc.status} {doc.body}")

    # -- the workers ------------------------------------------------------------------

    async def sender(self, client: Client, unit: str) -> None:
        while self.sending:
            await self.submit(client, self.new_doc(unit))
            await asyncio.sleep(PAUSE)

    async def reader(self, client: Client, unit: str) -> None:
        while self.reading:
            try:
                await self.read_once(client, unit)
            except (TimeoutError, aiohttp.ClientError, AssertionError, ValueError) as exc:
                # the hub died under us (or answered 5xx while dying): try again
                self.errors[type(exc).__name__] += 1
            await asyncio.sleep(PAUSE)

    async def read_once(self, client: Client, unit: str) -> None:
        for item in await client.inbox(unit):
            mid = item["id"]
            if (unit, mid) in self.acked:
                self.again.append((unit, mid))
                continue
            status, raw = await client.fetch(unit, mid)
            if status != 200:
                raise AssertionError(f"fetch {mid}: {status}")
            doc = self.by_sha.get(item["sha256"])
            if doc is None or raw != doc.raw:
                if item["sender"] != self.server_hub_id:
                    self.wrong_bytes.append((unit, mid))
                doc = None
            if doc is not None and doc.kind == "edoc" and (unit, doc.sha256) not in self.answered:
                reply = self.answer(unit, doc)
                await self.submit(client, reply)
                if reply.status is None:
                    return  # the hub is down; the reply goes again in settle()
                self.answered.add((unit, doc.sha256))
            code, body = await client.ack(unit, mid)
            if code != 200:
                raise AssertionError(f"ack {mid}: {code} {body}")
            self.acked.add((unit, mid))

    server_hub_id = "000.99.48.H63"

    # -- after the faults -------------------------------------------------------------

    def expected(self) -> dict[str, set[tuple[str, str]]]:
        """(recipient, route kind) per accepted message id."""
        out: dict[str, set[tuple[str, str]]] = {}
        for d in self.docs:
            if d.id is not None:
                out[d.id] = {(r, "push" if r == PEER_ORGAN else "mailbox") for r in d.recipients}
        return out

    async def settle(self, client: Client, timeout: float = 60.0) -> None:
        """Send again whatever got no answer, then let the readers empty every
        mailbox and the queue reach the peer: failing when ``timeout`` passes
        with nothing more arriving (a long run leaves a backlog to work off)."""
        self.sending = False
        # Send again until every document has its answer: on a loaded machine a
        # freshly restarted hub (workers starting) may time a request out at first.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while loop.time() < give_up:
            pending = [d for d in self.docs if d.status is None]
            if not pending:
                break
            for d in pending:
                await self.submit(client, d)
            if any(d.status is None for d in self.docs):
                await asyncio.sleep(0.5)
        unanswered = [(d.kind, d.number, d.error) for d in self.docs if d.status is None]
        assert not unanswered, f"the hub does not answer after the restart: {unanswered[:5]}"
        loop = asyncio.get_running_loop()
        left, moved = None, loop.time()   #: fewest still missing, and since when
        while True:
            mailbox, push = set(), set()
            for mid, recips in self.expected().items():
                for organ, how in recips:
                    (push if how == "push" else mailbox).add((organ, mid))
            missing_mail = {(o, m) for o, m in mailbox
                            if (o, m) not in self.acked and (o, m) not in self.seen_delivered}
            # Once the readers stop making headway (at once when few are left):
            # an acknowledgement committed just before a kill lost its answer,
            # and the item (rightly) never showed again.
            if len(missing_mail) <= 50 or loop.time() - moved >= 1.0:
                for organ, mid in sorted(missing_mail)[:50]:
                    if await self.state(client, mid, organ) == "delivered":
                        self.seen_delivered.add((organ, mid))
                        missing_mail.discard((organ, mid))
            missing_push = {m for _o, m in push if m not in self.peer.seen}
            waiting = [d for d in self.docs if d.status is None]
            if not missing_mail and not missing_push and not waiting:
                return
            if left is None or len(missing_mail) + len(missing_push) < left:
                left, moved = len(missing_mail) + len(missing_push), loop.time()
            deadline = moved + timeout
            for d in waiting:  # a 03 sent by a reader after settle() began
                await self.submit(client, d)
            assert loop.time() < deadline, (
                f"{timeout:.0f} s without progress: {len(missing_mail)} mailbox deliveries not "
                f"acknowledged "
                f"(e.g. {sorted(missing_mail)[:3]}), {len(missing_push)} never reached the peer")
            await asyncio.sleep(0.1)

    async def state(self, client: Client, mid: str, organ: str) -> str | None:
        sender = next(d.sender for d in self.docs if d.id == mid)
        view = await client.get_json(sender, f"/v1/envelopes/{mid}")
        return next((d["state"] for d in view["deliveries"] if d["recipient"] == organ), None)

    def check(self, data: Path) -> dict[str, Any]:
        """The promises, read from the spool after a clean stop; returns figures."""
        assert not self.wrong_bytes, f"fetched other bytes than were sent: {self.wrong_bytes[:5]}"
        assert not self.again, f"listed again after its acknowledgement: {self.again[:5]}"
        expected = self.expected()
        conn = open_ro(data)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            ours = set(expected)
            rows = conn.execute("SELECT envelope_id, recipient, route, state FROM deliveries")
            stored: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
            for r in rows:
                stored[r["envelope_id"]].append((r["recipient"], r["route"], r["state"]))
            lost = sorted(ours - set(stored))
            assert not lost, f"answered 200/202 but not in the spool: {lost[:5]}"
            for mid, recips in expected.items():
                got = stored[mid]
                assert sorted(r for r, _route, _s in got) == sorted(r for r, _h in recips), \
                    (mid, got, recips)
                assert all(s == "delivered" for _r, _route, s in got), (mid, got)
            delivered = collections.Counter(r[0] for r in conn.execute(
                "SELECT delivery_id FROM events WHERE kind = 'state' AND state = 'delivered'"))
            twice = [d for d, n in delivered.items() if n > 1]
            assert not twice, f"deliveries that became delivered twice: {twice[:5]}"
            accepted = collections.Counter(r[0] for r in conn.execute(
                "SELECT message_id FROM events WHERE kind = 'accepted'"))
            assert max(accepted.values()) == 1, "an envelope was accepted twice"
            events = check_event_chain(conn)
        finally:
            conn.close()
        push = {m for m, recips in expected.items() if (PEER_ORGAN, "push") in recips}
        assert push <= set(self.peer.seen), "a push delivery never reached the peer"
        assert self.peer.no_header == 0, "a push without X-Lienthong-Message-Id"
        assert set(self.peer.seen) <= ours, "the peer got a message the hub never accepted"
        verify = subprocess.run([sys.executable, "-m", "hub.cli", "audit", "verify", "--db",
                                 "--data", str(data)], cwd=REPO, capture_output=True, text=True,
                                timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        return {"envelopes": len(expected), "statuses": sum(d.kind == "status" and d.id is not None
                                                            for d in self.docs),
                "push": len(push), "push_resent": sum(n > 1 for n in self.peer.seen.values()),
                "acks_answer_lost": len(self.seen_delivered - self.acked), "events": events, "client_errors": dict(self.errors)}
