"""What the SDK inherits from Java: String.hashCode, HashMap order, Gson strings.

The bottom of ``hub.vxp``: ``hub.vxp.protocol`` needs these to put header
names in the order the SDK signs them and to write the sign-header JSON
byte for byte as Gson 2.2 does.  Pure functions.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final


def java_string_hash(s: str) -> int:
    """``java.lang.String.hashCode`` as an unsigned 32-bit int (over UTF-16 units)."""
    b = s.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(b), 2):
        h = (31 * h + (b[i] << 8 | b[i + 1])) & 0xFFFFFFFF
    return h


def _spread(h: int) -> int:
    return h ^ (h >> 16)


_TREEIFY_THRESHOLD: Final = 8
_MIN_TREEIFY_CAPACITY: Final = 64


def hashmap_order(names: Iterable[str]) -> list[str]:
    """The iteration order of a default ``java.util.HashMap`` filled with ``names``.

    Repeated names keep their first position (a ``put`` of a present key only
    replaces the value).  The table starts at 16 bins and doubles when the
    size passes 3/4 of it; a resize splits each bin keeping its order, so
    inside a bin entries stay in insertion order.  A bin reaching 9 entries
    also doubles the table while it is under 64 bins; above that Java turns
    the bin into a tree whose order this model does not follow, so that case
    (9 names sharing the low 6+ bits of their spread hash) raises ValueError.
    """
    order: list[str] = []
    seen: set[str] = set()
    cap = 16
    for name in names:
        if name in seen:
            continue
        h = _spread(java_string_hash(name))
        in_bin = sum(1 for n in order if _spread(java_string_hash(n)) & (cap - 1) == h & (cap - 1))
        order.append(name)
        seen.add(name)
        if in_bin >= _TREEIFY_THRESHOLD:
            if cap >= _MIN_TREEIFY_CAPACITY:
                raise ValueError(f"HashMap bin of {name!r} would become a tree")
            cap *= 2
        if len(order) > cap * 3 // 4:
            cap *= 2
    position = {n: i for i, n in enumerate(order)}
    return sorted(order, key=lambda n: (_spread(java_string_hash(n)) & (cap - 1), position[n]))


_SHORT_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\b": "\\b",
                         "\n": "\\n", "\r": "\\r", "\f": "\\f"}


def _gson_char(c: str) -> str:
    short = _SHORT_ESCAPES.get(c)
    if short is not None:
        return short
    if c < " " or c in "\u2028\u2029":
        return f"\\u{ord(c):04x}"
    return c


_NEEDS_ESCAPE: Final = re.compile('["\\\\\x00-\x1f\u2028\u2029]')


def gson_string(s: str) -> str:
    """``s`` as a JSON string literal the way Gson 2.2 writes it (HTML-unsafe mode).

    Only ``"`` ``\\``, control characters and U+2028/U+2029 are escaped;
    non-ASCII and ``/ < > & = '`` stay raw (``json.dumps`` would differ on
    U+2028, U+2029 and, with ensure_ascii, on every non-ASCII character).
    """
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _gson_char(m.group()), s) + '"'
