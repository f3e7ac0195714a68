"""The hub's keys and trust store as the settings ask for them, loaded once at start.

Used by the composition root (``hub.node``), by each cleanup worker process
when it starts, and by ``lienthong keys``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from hub.config import Settings
from hub.crypto.keys import HubKeys, TrustStore, init_dev_keys, load_hub_keys
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
    trust = TrustStore.build([(o.id, o.cert, o.ca) for o in directory], dev_keys_dir=dev_dir,
                             default_ca=Path(settings.trust_ca_file) if settings.trust_ca_file else None)
    return keys, trust
