"""TLS at the hub's own listener, and peer hubs known by their client certificate.

The hub speaks plain HTTP unless ``tls_cert_file`` and ``tls_key_file`` are
set; then ``listen`` serves HTTPS with that certificate (a reverse proxy in
front remains the usual deployment: README, "Production").

A peer hub may authenticate with mutual TLS instead of a relay token: its
``peer_hub`` adapter here sets ``accept_client_cert = true``, and the peer
presents, as its TLS client certificate, the very certificate this hub pins
as ``peer_cert`` (the one it hop-signs with, as it serves it at
``GET /v1/hub/certificate``).  The listener asks for a client certificate
(optional: agencies still come with tokens) and accepts only those pinned
ones, each as a trust anchor of its own.  A request with no bearer token
that presents one is the relay of that adapter's route, speaking as the
peer hub's OrganId.
"""
from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from hub.auth import Identity
from hub.config import Settings
from hub.crypto.keys import cert_names
from hub.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from hub.context import HubContext

log = logging.getLogger("hub.api.tls")


def _pinned_peers(hub: "HubContext") -> dict[bytes, str]:
    """DER of each accepted client certificate → the route of its adapter."""
    out: dict[bytes, str] = {}
    for name, adapter in hub.adapters.items():
        cert = adapter.hop_certificate
        if cert is not None and getattr(adapter.options, "accept_client_cert", False):
            out[cert.public_bytes(serialization.Encoding.DER)] = name
    return out


def server_context(settings: Settings, hub: "HubContext | None") -> ssl.SSLContext | None:
    """The listener's TLS context, or None for plain HTTP."""
    if not settings.tls_cert_file and not settings.tls_key_file:
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise ConfigError("tls_cert_file and tls_key_file go together",
                          details={"key": "tls_cert_file"})
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_cert_file/tls_key_file: cannot load {settings.tls_cert_file}: "
                          f"{exc}", details={"key": "tls_cert_file"}) from None
    peers = _pinned_peers(hub) if hub is not None else {}
    if peers:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        # Each pinned certificate is its own anchor: nothing else chains to it.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        for der in peers:
            ctx.load_verify_locations(cadata=der)
        log.info("TLS: client certificates of %d peer hub(s) accepted (%s)", len(peers),
                 ", ".join(sorted(peers.values())))
    return ctx


def client_cert_identity(hub: "HubContext", request: "web.Request") -> Identity | None:
    """The peer hub whose pinned certificate this TLS connection presented;
    None when it presented none; 401 when it is not one this hub accepts."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    route = _pinned_peers(hub).get(der)
    if route is None:
        raise AuthError("this client certificate is not one a peer_hub adapter accepts "
                        "(accept_client_cert with its peer_cert)", code="bad_client_cert")
    adapter = hub.adapters[route]
    assert adapter.hop_certificate is not None
    names = [n for n in sorted(cert_names(adapter.hop_certificate)) if n in hub.directory]
    return Identity(names[0] if names else f"route:{route}", "relay", route)
