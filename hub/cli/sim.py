"""``lienthong fake-platform``: the fake provincial VXP platform, for trying the hub out.

Runs ``hub.sim.vxp_platform`` (the same server the tests use) in the
foreground until SIGINT/SIGTERM; reads no spool and needs no hub.  The first
line printed names the endpoint (and the token URL with ``--oauth-client``),
so a script started with ``--listen 127.0.0.1:0`` learns the port it got.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Callable

from hub.cli.main import command
from hub.config import Settings
from hub.sim import vxp_platform


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("fake-platform", help="run a fake provincial VXP platform (SDKVXP "
                       "protocol) for trying out the provincial adapter",
                       description="A fake VXP platform: systems with HMAC secrets, mailboxes "
                       "per system, failure injection over POST /_control.")
    vxp_platform.add_arguments(p)


@command("fake-platform")
def cmd_fake_platform(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return vxp_platform.run(args)
