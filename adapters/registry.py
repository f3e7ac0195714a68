"""Finding adapter classes (entry points) and building the configured instances.

Classes are registered under the entry point group ``lienthong.adapters``
(setup.cfg) and checked against ``adapters.base.Adapter`` when loaded, with
unique names (Mailman's ``find_components``).  Instances come from the
``[adapters.<name>]`` tables of hub.toml; the implicit ``mailbox`` instance
always exists.  One class may run as several instances (Postfix's
master.cf ``smtp`` and ``relay``).
"""
from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

from adapters.base import Adapter
from hub.errors import ConfigError

log = logging.getLogger("hub.adapters")

GROUP = "lienthong.adapters"


def adapter_classes() -> dict[str, type[Adapter]]:
    found: dict[str, type[Adapter]] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in found:
            raise ConfigError(f"two adapters are registered as {ep.name!r}")
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ConfigError(f"entry point {ep.name} = {ep.value} is not an Adapter subclass")
        if cls.delivers and not cls.pull and cls.deliver is Adapter.deliver:
            raise ConfigError(f"adapter {ep.name} ({ep.value}) does not implement deliver()")
        if cls.ingests and cls.ingest is Adapter.ingest:
            raise ConfigError(f"adapter {ep.name} ({ep.value}) says it ingests but does not "
                              f"implement ingest()")
        found[ep.name] = cls
    if "mailbox" not in found:  # running from a source tree without an install
        from adapters.mailbox import MailboxAdapter
        found["mailbox"] = MailboxAdapter
    return found


def build_adapters(config: dict[str, dict[str, Any]]) -> dict[str, Adapter]:
    """One instance per ``[adapters.<name>]`` table, plus ``mailbox``; options
    are checked here, at start (``adapters.base.parse_options``)."""
    classes = adapter_classes()
    instances: dict[str, Adapter] = {"mailbox": classes["mailbox"]("mailbox", {})}
    for name, table in config.items():
        options = dict(table)
        class_name = options.pop("class")
        cls = classes.get(class_name)
        if cls is None:
            raise ConfigError(f"[adapters.{name}] class {class_name!r} is not a registered adapter "
                              f"(known: {', '.join(sorted(classes))})")
        instances[name] = cls(name, options)
    return instances
