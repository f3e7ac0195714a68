"""The hub's keys and trust store as the settings ask for them, loaded once at start.

Used by the composition root (``hub.node``), by each cleanup worker process
when it starts, and by ``lienthong keys``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from hub.config import Settings
from cryptography import x509

from hub.crypto.keys import HubKeys, TrustStore, cert_names, init_dev_keys, load_hub_keys
from hub.directory import Directory
from hub.errors import ConfigError

log = logging.getLogger("hub")


def load_crypto(settings: Settings, directory: Directory) -> tuple[HubKeys, TrustStore]:
    """The hub's signing keys and the trust store, loaded once at start."""
    dev_dir = None
    if settings.hub_pkcs12_file or settings.hub_key_file:
        password = os.environ.get("LIENTHONG_KEY_PASSWORD")
        keys = load_hub_keys(Path(settings.hub_key_file) if settings.hub_key_file else None,
                             Path(settings.hub_cert_file) if settings.hub_cert_file else None,
                             password=password.encode() if password else None,
                             pkcs12_file=Path(settings.hub_pkcs12_file) if settings.hub_pkcs12_file else None)
    else:
        if not settings.dev_keys:
            raise ConfigError("no hub key configured: set hub_key_file and hub_cert_file (or "
                              "hub_pkcs12_file), or dev_keys = true")
        dev_dir = settings.data_path / "keys"
        if not (dev_dir / "hub.key").exists():
            report = init_dev_keys(dev_dir, directory.hub.id,
                                   [o.id for o in directory if o.kind != "hub"])
            log.warning("generated development keys in %s (%d files): not for production",
                        dev_dir, len(report.created))
        keys = load_hub_keys(dev_dir / "hub.key", dev_dir / "hub.pem", ca_file=dev_dir / "ca.pem")
    peers = peer_certificates(settings, directory)
    trust = TrustStore.build([(o.id, peers.get(o.id) or o.cert, o.ca) for o in directory],
                             dev_keys_dir=dev_dir,
                             default_ca=Path(settings.trust_ca_file) if settings.trust_ca_file else None,
                             rules=directory.rules)
    return keys, trust


def peer_certificates(settings: Settings, directory: Directory) -> dict[str, str]:
    """OrganId → the ``peer_cert`` a ``peer_hub`` adapter names for that peer hub.

    A peer hub's hop signatures are checked against the certificate its
    adapter names (as the peer serves it at ``GET /v1/hub/certificate``),
    never against a development key this hub made for the same OrganId."""
    out: dict[str, str] = {}
    for name, table in settings.adapters.items():
        if table.get("class") != "peer_hub" or not table.get("peer_cert"):
            continue
        path = str(table["peer_cert"])
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[adapters.{name}] peer_cert: cannot read a PEM certificate from "
                              f"{path}: {exc}", details={"key": "peer_cert"}) from None
        for organ_id in cert_names(cert):
            if organ_id in directory:
                out[organ_id] = path
    return out
