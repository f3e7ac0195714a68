"""``lienthong keys``: development keys and trust (offline; reads no spool)."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from hub.cli.main import directory_of, command
from hub.config import Settings
from hub.crypto.keys import fingerprint, init_dev_keys, load_hub_keys
from hub.textsafe import say


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("keys", help="development keys and certificates")
    common(p)
    ksub = p.add_subparsers(dest="action", required=True)
    ip = ksub.add_parser("init", help="create a dev CA, the hub's key and one key per organisation "
                         "under DATA/keys (kept if present)")
    common(ip)
    ip.add_argument("--force", action="store_true", help="replace existing keys (new CA)")
    sp = ksub.add_parser("show", help="the hub's certificate in use")
    common(sp)


@command("keys")
def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    directory = directory_of(settings)
    keys_dir = settings.data_path / "keys"
    if args.action == "init":
        report = init_dev_keys(keys_dir, directory.hub.id,
                               [o.id for o in directory if o.kind != "hub"], force=args.force)
        say(f"{keys_dir}: {len(report.created)} created, {len(report.kept)} kept "
              f"({report.algorithm})")
        say(f"hub certificate: {keys_dir / 'hub.pem'}  (give it to auditors: "
              f"`lienthong receipts verify FILE --cert {keys_dir / 'hub.pem'}`)")
        return 0
    if settings.hub_key_file or settings.hub_pkcs12_file:
        from hub.crypto.setup import load_crypto
        keys, _trust = load_crypto(settings, directory)
    else:
        keys = load_hub_keys(keys_dir / "hub.key", keys_dir / "hub.pem")
    say(f"subject      {keys.cert.subject.rfc4514_string()}")
    say(f"issuer       {keys.cert.issuer.rfc4514_string()}")
    say(f"valid        {keys.cert.not_valid_before_utc:%Y-%m-%d} .. {keys.cert.not_valid_after_utc:%Y-%m-%d}")
    say(f"sha256       {fingerprint(keys.cert)}")
    return 0
