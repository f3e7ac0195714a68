"""The provincial interchange platform (VXP/LGSP), both ways, over the SDKVXP protocol.

Sits at the hub's edge on the ``provincial`` route: ``hub.vxp.client`` speaks
the platform's protocol, this adapter maps it onto the hub's two ports.  The
district hub is one *system* on the platform (``system_id`` and its HMAC
``secret``); the platform routes by OrganId, so it must list the district's
units (and the hub's own OrganId, for its notices) as that system's.

Egress (``deliver``).  Every delivery on the route, document or status, goes
by ``sendEdoc`` (``messagetype`` ``edoc`` or ``status``) with ``from`` the
sender's OrganId and ``to`` the delivery's one recipient, so a document for
two departments is two deliveries and two sends, never one send routed twice.
The body is the wire form: the original with the hub's TraceHeader and hop
signature appended (a payload file is signed file to file, then read to be
sent: the SDK protocol hashes and sends one body).  Outcomes: the platform's
DocId → delivered; a temporary client error (timeout, connection, 5xx, a body
that is not the SDK's JSON, a FAIL with an ErrorCode in ``retryable_codes``)
→ defer; a permanent one (any other FAIL, e.g. ``unknown_recipient``; 401 with
a fresh token; other 4xx) → refused, and the sender is told.

At-least-once: when the platform takes a document but its answer is lost
(timeout, connection dropped after the commit), the hub sends it again on the
next attempt.  The platform does not deduplicate sendEdoc (the protocol has
no idempotency key, and each call gets a new DocId): it sees two sends of the
same DocumentId and lists the document twice for its recipient, each time
with a new TraceHeader.  Receivers deduplicate by sender + DocumentId, as
this hub's cleanup does for what it takes in.

Ingest (``ingest``).  An APScheduler interval job (``poll_interval``, one
instance, coalesced) wakes a poll; the poll runs inside the supervised ingest
task, so stopping the hub cancels it cleanly.  Each poll lists documents
(``getReceivedEdocList`` messagetype ``edoc``), then statuses, and for each
item (at most ``batch`` of each) fetches it (``getEdoc``) and hands it to
cleanup as the route's relay identity: its From must be an organisation the
directory lists on this route, else it is refused (``route_not_allowed``).
Only after ``accept`` has returned (the durable commit) is it confirmed with
``updateStatus done``.  Then:

- refused for good by cleanup (HTTP 4xx codes: not edXML, route_not_allowed,
  unknown_document...): confirmed with ``updateStatus fail`` so the platform
  stops listing it, logged and counted (``refused_in``);
- refused for now (5xx, e.g. backpressure 503): left unconfirmed, the poll
  stops, and the next one tries again;
- listed again after a lost ``updateStatus`` (or twice in one listing):
  cleanup takes it as the same message (no second delivery) and it is
  confirmed again (``duplicates``);
- a temporary platform error stops the poll (the next one starts over); a
  permanent one on one item (e.g. getEdoc ``not_found``) skips that item;
  after ``OUTAGE_AFTER`` failed listings in a row the loop raises, so the
  supervisor shows the route degraded or down and polls again after its
  growing restart delay (1 s doubling up to 60 s) until the platform answers.

Options (``[adapters.<name>]``, checked at start): ``url`` (the endpoint the
operations are appended to, as an SDK user sets it), ``system_id``, exactly
one of ``secret`` and ``secret_file`` (read at start; refused if any user may
read it), ``poll_interval`` (``"5s"``), ``timeout`` per call (``"30s"``),
``batch`` (100), ``retryable_codes``, and for an OAuth2 gateway in front all
three of ``token_url``, ``client_id``, ``client_secret``.

Logs go to ``hub.adapter.<name>``, the message id first (the hub's id once it
has one, else ``vxp:<DocId>``); text from the platform is escaped.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import re
import stat
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from adapters.base import (
    Adapter,
    DeliveryRequest,
    Duration,
    EgressPort,
    IngestPort,
    Outcome,
    Secret,
)
from hub.errors import ConfigError, HubError, ValidationError
from hub.vxp.client import DEFAULT_RETRYABLE_CODES, VxpClient
from hub.vxp.errors import VxpError, VxpPermanentError, VxpTemporaryError
from hub.vxp.records import ReceivedEdoc

#: Distinct error codes kept in ``health()``; later ones count as ``errors.other``.
MAX_CODES = 32
#: Failed listings in a row after which the ingest loop raises: the supervisor
#: then shows the route degraded or down and retries with its growing delay.
OUTAGE_AFTER = 3
_CODE = re.compile(r"[^A-Za-z0-9_.-]")


def escape(text: object, limit: int = 200) -> str:
    """Outside text for a log line: bounded, control and non-ASCII characters escaped."""
    return str(text)[:limit].encode("unicode_escape").decode("ascii")


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class ProvincialOptions:
    #: The platform's endpoint; each operation is ``<url>/<operation>``.
    url: str
    #: This hub's system id on the platform.
    system_id: str
    #: The HMAC secret of ``system_id`` (or ``secret_file``).
    secret: Secret | None = None
    #: A file holding the secret (one line; not readable by other users).
    secret_file: Path | None = None
    #: How often the platform is asked for documents and statuses.
    poll_interval: Duration = Duration(5.0)
    #: Time limit of each call to the platform.
    timeout: Duration = Duration(30.0)
    #: Items of each message type taken per poll.
    batch: int = 100
    #: FAIL ErrorCodes that mean "try again later" (others are refusals).
    retryable_codes: tuple[str, ...] = tuple(sorted(DEFAULT_RETRYABLE_CODES))
    #: OAuth2 gateway in front of the platform: its token endpoint...
    token_url: str | None = None
    #: ...and the client credentials it issues tokens for.
    client_id: str | None = None
    client_secret: Secret | None = None

    def __post_init__(self) -> None:
        if not re.match(r"https?://[^/\s]+", self.url):
            raise ValueError(f"url must be an http:// or https:// URL, not {self.url!r}")
        if not self.system_id or any(c in self.system_id for c in "\r\n\0"):
            raise ValueError("system_id must be a non-empty single line")
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret and secret_file")
        if self.secret is not None and not self.secret:
            raise ValueError("secret is empty")
        oauth = {"token_url": self.token_url, "client_id": self.client_id,
                 "client_secret": self.client_secret}
        given = [k for k, v in oauth.items() if v is not None]
        if given and len(given) != 3:
            missing = sorted(set(oauth) - set(given))
            raise ValueError(f"an OAuth2 gateway needs token_url, client_id and client_secret "
                             f"together (missing: {', '.join(missing)})")
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")


def read_secret_file(name: str, path: Path) -> str:
    """The secret in ``path`` (its first line), refusing a file other users may read."""
    where = f"[adapters.{name}] secret_file {path}"
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it: {exc}", details={"key": "secret_file"}) from None
    if st.st_mode & stat.S_IROTH:
        raise ConfigError(f"{where}: readable by every user (mode {stat.filemode(st.st_mode)}); "
                          f"chmod 600 it", details={"key": "secret_file"})
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"{where}: the file is empty", details={"key": "secret_file"})
    return secret


class _StopPoll(Exception):
    """Ends one poll early: the next poll starts over."""


class ProvincialAdapter(Adapter):
    ingests = True
    forwards = True
    Options = ProvincialOptions

    def __init__(self, name: str, options: Any = None) -> None:
        super().__init__(name, options)
        self.log = logging.getLogger(f"hub.adapter.{name}")
        self.client: VxpClient | None = None
        #: The hub's clock, for the times in ``health()``.
        self._clock: Callable[[], float] = time.time
        self.polls = 0
        self.last_poll_at: float | None = None
        self.taken_in = 0
        self.duplicates = 0
        self.refused_in = 0
        self.sent = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.errors: collections.Counter[str] = collections.Counter()
        self._listing_failures = 0

    # ---------------------------------------------------------------- life cycle

    async def start(self) -> None:
        if self.client is not None:
            return
        o = self.options
        secret = o.secret if o.secret is not None else read_secret_file(self.name, o.secret_file)
        self.client = VxpClient(o.url.rstrip("/"), o.system_id, secret, timeout=o.timeout,
                                token_url=o.token_url, client_id=o.client_id,
                                client_secret=o.client_secret, retryable_codes=o.retryable_codes)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def _client(self) -> VxpClient:
        if self.client is None:
            await self.start()
        assert self.client is not None
        return self.client

    def bind(self, port: EgressPort) -> None:
        super().bind(port)
        self._clock = port.clock

    def _failed(self, exc: VxpError, context: str) -> None:
        status = exc.details.get("http_status")
        code = exc.error_code or (f"http_{status}" if isinstance(status, int) and status >= 400
                                  else exc.code)
        code = _CODE.sub("_", code)[:40] or "unknown"
        if code not in self.errors and len(self.errors) >= MAX_CODES:
            code = "other"
        self.errors[code] += 1
        self.last_error = f"{context}: {exc.code}: {exc.message}"[:500]
        self.last_error_at = self._clock()

    # ---------------------------------------------------------------- egress

    async def deliver(self, req: DeliveryRequest) -> Outcome:
        client = await self._client()
        try:
            data = await self._wire_bytes(req)
        except ValidationError as exc:  # the hub cannot relay this envelope as it is
            return Outcome.refused(f"cannot build the wire form: {exc.message}")
        except OSError as exc:
            return Outcome.defer(f"reading the payload: {exc}")
        messagetype: Literal["edoc", "status"] = "status" if req.kind == "status" else "edoc"
        try:
            doc_id = await client.send_edoc(data, req.sender, messagetype, to=[req.recipient])
        except VxpTemporaryError as exc:
            self._failed(exc, f"{req.message_id} sendEdoc")
            self.log.info("%s %s to %s deferred: %s", req.message_id, messagetype, req.recipient,
                          exc.message)
            return Outcome.defer(exc.message)
        except VxpPermanentError as exc:
            self._failed(exc, f"{req.message_id} sendEdoc")
            self.log.warning("%s %s to %s refused by the platform: %s", req.message_id,
                             messagetype, req.recipient, exc.message)
            return Outcome.refused(exc.message)
        self.sent += 1
        self.log.info("%s %s sent to %s: platform DocId %s", req.message_id, messagetype,
                      req.recipient, escape(doc_id))
        return Outcome.delivered(f"platform DocId {escape(doc_id, 80)}")

    async def _wire_bytes(self, req: DeliveryRequest) -> bytes:
        wire = await self.port.wire_form(req.raw) if self.port is not None else req.raw
        if not isinstance(wire, Path):
            return wire
        try:
            # sendEdoc signs the hash of one body and sends it whole: read it once.
            return await asyncio.to_thread(wire.read_bytes)
        finally:
            if wire != req.raw:
                wire.unlink(missing_ok=True)

    # ---------------------------------------------------------------- ingest

    async def ingest(self, port: IngestPort) -> None:
        await self._client()
        due = asyncio.Event()
        due.set()  # a first poll at once

        async def tick() -> None:  # a coroutine: run on the loop, not in a thread
            due.set()
        scheduler = AsyncIOScheduler(timezone=timezone.utc)
        scheduler.add_job(tick, "interval", seconds=self.options.poll_interval,
                          id=f"poll-{self.name}", max_instances=1, coalesce=True)
        scheduler.start()
        try:
            while True:
                await due.wait()
                due.clear()
                await self.poll(port)
        finally:
            scheduler.shutdown(wait=False)

    async def poll(self, port: IngestPort) -> int:
        """One look at the platform: documents, then statuses; the items taken in."""
        client = await self._client()
        before = self.taken_in
        try:
            for messagetype in ("edoc", "status"):
                try:
                    items = await client.get_received_edoc_list(messagetype)
                except VxpError as exc:
                    self._failed(exc, f"getReceivedEdocList {messagetype}")
                    self._listing_failures += 1
                    if self._listing_failures >= OUTAGE_AFTER:
                        # An outage, not a hiccup: the supervisor logs it, marks the
                        # route, and restarts the loop later and later until it answers.
                        raise
                    self.log.warning("listing %s on the platform failed: %s", messagetype,
                                     exc.message)
                    raise _StopPoll from None
                if self._listing_failures:
                    self._listing_failures = 0
                    self.log.info("listing on the platform works again")
                for item in items[:self.options.batch]:
                    await self._take(client, port, item)
        except _StopPoll:
            return self.taken_in - before
        self.polls += 1
        self.last_poll_at = self._clock()
        return self.taken_in - before

    async def _take(self, client: VxpClient, port: IngestPort, item: ReceivedEdoc) -> None:
        ref = f"vxp:{escape(item.doc_id, 80)}"
        try:
            raw = await client.get_edoc(item.doc_id)
        except VxpError as exc:
            self._failed(exc, f"{ref} getEdoc")
            self.log.warning("%s getEdoc failed: %s", ref, exc.message)
            if exc.temporary:
                raise _StopPoll from None
            return  # this item only; it stays listed and is tried next poll
        try:
            result = await port.accept(raw, origin=f"vxp:{self.name}:{item.doc_id}"[:200])
        except HubError as exc:
            if exc.http_status >= 500 or exc.http_status in (408, 429):
                self.last_error = f"{ref} accept: {exc.code}: {exc.message}"[:500]
                self.last_error_at = self._clock()
                self.log.info("%s not taken in for now (%s): left on the platform", ref, exc.code)
                raise _StopPoll from None
            self.refused_in += 1
            self.log.warning("%s from %s refused: %s: %s", ref, escape(item.from_), exc.code,
                             escape(exc.message))
            await self._confirm(client, ref, item, "fail")
            return
        if result.created:
            self.taken_in += 1
            self.log.info("%s taken in from the platform (%s, DocId %s)", result.id, result.kind,
                          escape(item.doc_id, 80))
        else:
            self.duplicates += 1
            self.log.info("%s listed again by the platform (DocId %s): the same message, "
                          "confirmed again", result.id, escape(item.doc_id, 80))
        await self._confirm(client, result.id, item, "done")

    async def _confirm(self, client: VxpClient, ref: str, item: ReceivedEdoc, status: str) -> None:
        try:
            await client.update_status(item.doc_id, status)  # type: ignore[arg-type]
        except VxpError as exc:
            # Not confirmed: the platform lists it again and it is taken as the same message.
            self._failed(exc, f"{ref} updateStatus {status}")
            self.log.warning("%s updateStatus %s failed: %s", ref, status, exc.message)
            if exc.temporary:
                raise _StopPoll from None

    # ---------------------------------------------------------------- health

    def health(self) -> dict[str, Any]:
        """Flat, JSON-able facts for ``GET /v1/adapters``: ``system_id``, ``url``, ``polls`` (completed),
        ``last_poll_at`` (ISO 8601 UTC, or null), ``taken_in`` (new documents and statuses),
        ``duplicates`` (listed again, the same message), ``refused_in`` (refused by cleanup,
        confirmed ``fail``), ``sent`` (sendEdoc calls answered with a DocId), ``last_error``,
        ``last_error_at`` (ISO 8601 UTC, or null), and ``errors.<code>``: platform errors
        (both ways) by the platform's ErrorCode, ``http_<status>``, or the client's code
        (``vxp_timeout``, ``vxp_connection``, ``vxp_bad_response``...)."""
        out: dict[str, Any] = {
            "system_id": self.options.system_id, "url": self.options.url, "polls": self.polls,
            "last_poll_at": _iso(self.last_poll_at), "taken_in": self.taken_in,
            "duplicates": self.duplicates, "refused_in": self.refused_in, "sent": self.sent,
            "last_error": self.last_error, "last_error_at": _iso(self.last_error_at)}
        out.update({f"errors.{code}": n for code, n in sorted(self.errors.items())})
        return out
