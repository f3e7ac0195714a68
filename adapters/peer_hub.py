"""Federation between district hubs: documents and statuses both ways.

Each district runs its own hub.  Hub X delivers to hub Y by POSTing the wire
form (the original, X's TraceHeader and X's hop signature appended) to Y's
``POST /v1/envelopes`` with a relay token that Y issued for X
(``lienthong token <X's hub OrganId> --role relay --route <the route X
arrives by at Y>``); Y's cleanup then accepts the documents and statuses of
the organisations that route speaks for (X's code space), and only those.
Y delivers to X the same way, with X's adapter for Y and a token X issued.

Trust both ways:
    * Outgoing: the peer's answer is believed only when it is the hub API's
      own: ``202``/``200`` with a JSON body carrying the message ``id``.  A
      2xx with anything else (a proxy's page, garbage) is deferred, not
      taken as delivered; ``408``/``425``/``429``/5xx, timeouts and
      connection errors defer; other 4xx refuse (the peer's error code and
      message become the reason, and the sender is told).
    * Incoming: documents arriving by this adapter's route must carry a hop
      signature by ``peer_cert`` (the peer hub's certificate, as it serves it
      at ``GET /v1/hub/certificate``) on their last TraceHeader; cleanup
      refuses anything else with ``signature_invalid``.

A peer that is down is retried with the queue manager's backoff for up to
``maximal_lifetime``; nothing is lost meanwhile, and since every delivery
carries the same message and DocumentId, the peer takes a resend as the
same document.  Each hub keeps its own receipts and audit log.

Options: ``url`` (the peer hub's base URL), ``token`` (the relay token the
peer issued), ``peer_cert`` (PEM), ``timeout`` (default ``"60s"``),
``client_cert``/``client_key`` (mutual TLS to a peer that asks for it, in
place of the token or beside it), ``ca_file`` (the CA that issued the
peer's TLS certificate) and ``accept_client_cert`` (the peer may come with
``peer_cert`` as its TLS client certificate instead of a token:
``hub.api.tls``).
"""
from __future__ import annotations

import dataclasses
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from adapters.base import DeliveryRequest, Duration, Outcome, Secret
from adapters.edxml_http import EdxmlHttpAdapter
from hub.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PeerHubOptions:
    #: The peer hub's base URL (``http://host:port``).
    url: str
    #: The peer hub's certificate (PEM): its hop signatures are checked against it.
    peer_cert: Path
    #: The relay token the peer issued for this hub (or mutual TLS: client_cert).
    token: Secret | None = None
    #: The whole request's time limit.
    timeout: Duration = Duration(60.0)
    #: Mutual TLS: this hub's client certificate and key (PEM), when the peer asks for one.
    client_cert: Path | None = None
    client_key: Path | None = None
    #: The CA of the peer's TLS certificate (default: the system's).
    ca_file: Path | None = None
    #: Incoming: the peer may authenticate by presenting ``peer_cert`` as its TLS
    #: client certificate instead of a relay token (needs tls_cert_file here).
    accept_client_cert: bool = False


class PeerHubAdapter(EdxmlHttpAdapter):
    Options = PeerHubOptions  # type: ignore[assignment]
    forwards = True

    def __init__(self, name: str, options: Any = None) -> None:
        super().__init__(name, options)
        self.url = self.url.rstrip("/")
        try:
            self.hop_certificate = x509.load_pem_x509_certificate(
                Path(self.options.peer_cert).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[adapters.{name}] peer_cert: cannot read a PEM certificate from "
                              f"{self.options.peer_cert}: {exc}", details={"key": "peer_cert"}) from None
        if (self.options.client_cert is None) != (self.options.client_key is None):
            raise ConfigError(f"[adapters.{name}] client_cert and client_key go together",
                              details={"key": "client_cert"})
        if not self.options.token and self.options.client_cert is None:
            raise ConfigError(f"[adapters.{name}] token: the relay token the peer issued, or "
                              f"client_cert and client_key for mutual TLS", details={"key": "token"})
        if self.options.client_cert is not None and not self.url.startswith("https:"):
            raise ConfigError(f"[adapters.{name}] client_cert needs an https:// url",
                              details={"key": "client_cert"})

    async def start(self) -> None:
        o = self.options
        ssl_ctx: ssl.SSLContext | None = None
        if self.url.startswith("https:"):
            ssl_ctx = ssl.create_default_context(cafile=str(o.ca_file) if o.ca_file else None)
            if o.client_cert is not None:
                ssl_ctx.load_cert_chain(str(o.client_cert), str(o.client_key))
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(ssl=ssl_ctx) if ssl_ctx else None)

    def endpoint(self) -> str:
        return f"{self.url}/v1/envelopes"

    def judge(self, req: DeliveryRequest, status: int, text: str) -> Outcome:
        if status in (200, 202):
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"]:
                self.log.info("%s delivered to %s via %s as %s (%d)", req.message_id,
                              req.recipient, self.url, body["id"], status)
                return Outcome.delivered(f"HTTP {status}: the peer holds it as {body['id']}")
            return Outcome.defer(f"HTTP {status} but the answer is not the hub API's "
                                 f"(not believed): {text[:200]!r}")
        if 200 <= status < 300:
            return Outcome.defer(f"HTTP {status} is not an answer the hub API gives (not believed)")
        if 400 <= status < 500 and status not in (408, 425, 429):
            try:
                err = json.loads(text)["error"]
                return Outcome.refused(f"HTTP {status} {err['code']}: {err['message']}"[:500])
            except (ValueError, KeyError, TypeError):
                pass
        return super().judge(req, status, text)

    def health(self) -> dict[str, Any]:
        cert = self.hop_certificate
        return {"peer": self.url,
                "peer_cert_not_after": cert.not_valid_after_utc.isoformat() if cert else None}
