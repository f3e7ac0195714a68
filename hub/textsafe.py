"""Text from outside, made safe to show: on a terminal and in the hub's log.

Where it sits: below everything that prints or logs.  A subject, a
description, a DocumentId, a peer's error text, a request path or a header
value may carry characters that a terminal or a log reader acts on instead
of showing: a newline forges a log line, a carriage return overwrites the
line shown, ESC starts a terminal control sequence (colours, the window
title, OSC 8 links, clearing the screen), BEL rings, the C1 controls
U+0080–U+009F are control sequences of their own (CSI is U+009B), and the
bidirectional overrides reorder what is shown (the "Trojan Source" trick).

``escape(text)`` shows every one of them as a visible escape instead:
``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\x9b``, ``\\u202e``.  Printable
text, Vietnamese included, is left as it is.  A backslash is left as it is
too: an escape can be *imitated* but never *acted on*, which is all a reader
needs.

``SafeFormatter`` is the formatter ``lienthong serve`` installs on its log:
every message is escaped after its arguments are merged, so no field can
start a line.  A record that carries a traceback keeps it on the following
lines, each escaped and indented by two spaces, so that a line starting in
the first column is always the start of a real record.

``safe_json(text)`` does the same for JSON a command prints: the characters
that ``json.dumps(ensure_ascii=False)`` leaves raw (DEL, C1, bidi controls,
the line and paragraph separators) become ``\\uXXXX``, which JSON readers
decode back to the same string.
"""
from __future__ import annotations

import logging
import re

#: C0 controls, DEL, C1 controls; the bidi embeddings, overrides, isolates and
#: marks; the line and paragraph separators; the BOM / zero-width no-break space.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
#: The same, less what JSON already escapes (every C0 control).
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _shown(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: object) -> str:
    """``text`` (anything: it is ``str()``-ed) with every control and bidi character
    shown as a visible escape; safe on one line of a terminal or a log."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_shown, s)


def safe_json(text: str) -> str:
    """JSON text with the characters a terminal acts on written as ``\\uXXXX``."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class SafeFormatter(logging.Formatter):
    """A log formatter under which no field can forge a line or steer a terminal."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(stack_info)


def _indented(text: str) -> str:
    return "\n".join("  " + escape(line) for line in text.splitlines())


def install_log(level: str, stream=None) -> logging.Handler:  # type: ignore[no-untyped-def]
    """The hub's log: one handler on the root logger, with ``SafeFormatter``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def say(line: object, file=None) -> None:  # type: ignore[no-untyped-def]
    """Print one line that carries text from outside: escaped, so it stays one line
    and cannot steer the terminal (every CLI command prints through this)."""
    print(escape(line), file=file)


def say_json(value: object, file=None, **dumps) -> None:  # type: ignore[no-untyped-def]
    """Print JSON (``indent=2`` unless told) with terminal-active characters as ``\\uXXXX``."""
    import json
    dumps.setdefault("indent", 2)
    print(safe_json(json.dumps(value, ensure_ascii=False, **dumps)), file=file)
