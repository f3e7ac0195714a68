"""Bounds on the tree, checked on the bytes before libxml2 builds anything.

Where this sits: the first thing ``xmlsafe.parse`` does after the size
check.  A parsed element costs libxml2 and lxml far more than its bytes
(``<a/>`` is 4 bytes and about 90 in memory; an attribute ``a="v"`` 6 bytes
and about 200), so a body within ``max_envelope_size`` could still need
gigabytes as a tree.  One linear pass over the bytes (a regular expression,
in C) finds every markup start and every start tag's attribute run, and
refuses, before parsing:

=====================  =====================================================
too_many_elements      more start tags than ``max_xml_elements``
too_many_attributes    one start tag with more than ``max_xml_attributes``
                       attributes, or more than ``max_xml_elements`` in all
too_many_namespaces    more ``xmlns`` declarations than ``max_xml_namespaces``
xml_text_too_long      a run of text (or a comment, or an attribute value)
                       longer than ``max_xml_text``, except the content of a
                       ``ContentTransferEncoded`` (an attachment's base64)
unsupported_encoding   an encoding in which these bytes cannot be scanned
=====================  =====================================================

The counts are upper bounds (markup-looking text inside a comment or CDATA
section counts too), never under-counts: a value cannot hold ``<``, so a
start tag runs from its ``<`` to the next ``<`` at most.  ASCII-compatible
encodings (UTF-8, the ISO-8859 family, windows-125x, no declaration) are
scanned as bytes; any other encoding Python knows (UTF-16, UTF-32, ...) is
decoded first, since there a ``<`` byte need not be a ``<``.
"""
from __future__ import annotations

import codecs
import dataclasses
import functools
import re
from typing import Any

from hub.errors import TooLargeError, ValidationError

_ATTR = r"""\s+[^\s=<>"'/]+\s*=\s*(?:"[^"<]*"|'[^'<]*')"""
# Every "<": a start tag ("<name" then at most one attribute more than allowed,
# so that a tag of a million attributes costs no more than one of 257), or another
# markup start (end tag, comment, CDATA, PI), caught so that the text before it
# is measured.
_MARKUP = r"""<(?:([^\s<>!?/]+)((?:%s){0,%d})|[/!?])"""
_ATTR_B = re.compile(_ATTR.encode("ascii"))
_ATTR_S = re.compile(_ATTR)
_DECLARED = re.compile(
    rb"""(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")
_BOMS = ((b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"),
         (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"),
         (b"\x00\x00\x00<", "utf-32-be"), (b"<\x00\x00\x00", "utf-32-le"),
         (b"\x00<\x00?", "utf-16-be"), (b"<\x00?\x00", "utf-16-le"))
#: Encodings in which every byte below 0x80 is the ASCII character: "<" is "<".
_ASCII_SAFE = re.compile(r"(?:utf[-_]?8|us[-_]?ascii|ascii|iso[-_]?8859[-_]?\d+|latin[-_]?\d|"
                         r"windows[-_]?125\d|cp125\d|tcvn.*|viscii)\Z", re.IGNORECASE)
_ATTACHMENT = b"ContentTransferEncoded"


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """How big a tree may get; the defaults are those of ``hub.config``."""

    elements: int = 100_000
    attributes: int = 256
    namespaces: int = 256
    text: int = 1 << 20

    @classmethod
    def from_settings(cls, settings: Any) -> "Limits":
        return cls(settings.max_xml_elements, settings.max_xml_attributes,
                   settings.max_xml_namespaces, settings.max_xml_text)


@functools.lru_cache(maxsize=8)
def _markup(attributes: int, text: bool) -> re.Pattern[Any]:
    pattern = _MARKUP % (_ATTR, attributes + 1)
    return re.compile(pattern if text else pattern.encode("ascii"))


def check(buf: Any, limits: Limits) -> None:
    """Refuse ``buf`` (bytes, or an ``mmap`` of a spooled body) if its tree
    would exceed ``limits``.  Linear in ``len(buf)``; stops at the first excess."""
    encoding = _encoding(buf)
    if encoding is None:
        _scan(buf, limits, _markup(limits.attributes, False), _ATTR_B, b"=", b"xmlns",
              _ATTACHMENT, b"<")
    else:
        text = bytes(buf).decode(encoding, errors="replace")
        _scan(text, limits, _markup(limits.attributes, True), _ATTR_S, "=", "xmlns",
              _ATTACHMENT.decode(), "<")


def _encoding(buf: Any) -> str | None:
    """None for an ASCII-compatible document, else the codec to decode it with."""
    head = bytes(buf[:256])
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    if head.startswith(b"\x4c\x6f\xa7\x94"):  # "<?xm" in EBCDIC
        raise _unsupported("EBCDIC")
    declared = _DECLARED.match(head)
    if declared is None:
        return None
    name = declared[1].decode("ascii")
    if _ASCII_SAFE.match(name):
        return None
    try:
        codecs.lookup(name)
    except LookupError:
        raise _unsupported(name) from None
    return name


def _unsupported(name: str) -> ValidationError:
    return ValidationError(f"encoding {name!r} is not accepted; send UTF-8",
                           code="unsupported_encoding",
                           details={"path": None, "line": 1, "encoding": name})


def _scan(buf: Any, limits: Limits, markup: re.Pattern[Any], attr: re.Pattern[Any],
          eq: Any, xmlns: Any, attachment: Any, lt: Any) -> None:
    # An upper bound first, in C: a flood of tiny elements is refused without a
    # Python step per element.
    starts = _count(buf, lt) - _count(buf, lt + "/" if isinstance(lt, str) else lt + b"/")
    if starts > 2 * limits.elements:
        raise _too_many(buf, 0, "too_many_elements",
                        f"more than {limits.elements} elements", limits.elements)
    elements = attributes = namespaces = 0
    text_from = 0
    in_attachment = False
    for m in markup.finditer(buf):
        if m.start() - text_from > limits.text and not in_attachment:
            _too_long(buf, text_from, m.start() - text_from, limits.text)
        text_from = m.end()
        name = m[1]
        if name is None:
            in_attachment = False
            continue
        in_attachment = name.endswith(attachment)
        elements += 1
        if elements > limits.elements:
            raise _too_many(buf, m.start(), "too_many_elements",
                            f"more than {limits.elements} elements", limits.elements)
        run = m[2]
        if not run:
            continue
        count = run.count(eq)
        if count > limits.attributes:  # "=" may also sit inside a value: count exactly
            count = sum(1 for _ in attr.finditer(run))
        if count > limits.attributes:
            raise _too_many(buf, m.start(), "too_many_attributes",
                            f"an element with more than {limits.attributes} attributes",
                            limits.attributes)
        attributes += count
        if attributes > limits.elements:
            raise _too_many(buf, m.start(), "too_many_attributes",
                            f"more than {limits.elements} attributes in all", limits.elements)
        namespaces += run.count(xmlns)
        if namespaces > limits.namespaces:
            raise _too_many(buf, m.start(), "too_many_namespaces",
                            f"more than {limits.namespaces} namespace declarations",
                            limits.namespaces)
        if len(run) > limits.text:
            for value in attr.finditer(run):
                if len(value[0]) > limits.text:
                    _too_long(buf, m.start(), len(value[0]), limits.text)
    if len(buf) - text_from > limits.text:
        _too_long(buf, text_from, len(buf) - text_from, limits.text)


def _count(buf: Any, what: Any) -> int:
    if isinstance(buf, (bytes, str)):
        return buf.count(what)
    # An mmap has no count(): count 8 MiB slices, each overlapping the next by one
    # byte less than ``what``, so that an occurrence across a boundary counts once.
    step, extra = 8 << 20, len(what) - 1
    return sum(buf[at:at + step + extra].count(what) for at in range(0, len(buf), step))


def _line(buf: Any, at: int) -> int:
    head = buf[:at]  # an mmap's slice is bytes too
    return head.count("\n" if isinstance(head, str) else b"\n") + 1


def _too_many(buf: Any, at: int, code: str, what: str, limit: int) -> TooLargeError:
    return TooLargeError(f"the document has {what}", code=code,
                         details={"path": None, "line": _line(buf, at), "limit": limit})


def _too_long(buf: Any, at: int, length: int, limit: int) -> None:
    raise TooLargeError(
        f"a text node, comment or attribute value of {length} characters is longer than "
        f"the {limit} allowed outside an attachment", code="xml_text_too_long",
        details={"path": None, "line": _line(buf, at), "limit": limit})
