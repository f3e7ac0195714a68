"""Hardened XML parsing and schema validation: the first two stages of accept.

Every ingress (HTTP upload, pull adapter) hands raw bytes to the accept path,
which runs, in order::

    xmlsafe.parse      bytes -> tree      size, well-formedness, no DTD/PI/entities,
                                          depth, root is {QCVN}edXML
    xmlsafe.validate   tree -> None       schemas/edxml.xsd (+ the one rule
                                          XSD 1.0 cannot state here)
    edxml.extract      tree -> Envelope   cardinality and business rules

Nothing here trusts the document: entities are never expanded, nothing is
fetched from disk or network, and a DOCTYPE is refused outright (edXML never
needs one, and every entity attack - billion laughs, XXE, parameter
entities, external DTDs - starts with one).

Diagnostics: every refusal is a ``ValidationError`` (``TooLargeError`` for
size) with a stable ``code`` and ``details`` holding at least ``path`` (an
xpath-like ``/edXML/edXMLEnvelope/...`` path, or ``None``) and ``line``.

Threads: lxml parsers and validators keep per-object state (the error log),
so each thread gets its own parser and its own compiled schema; the schema
file itself is read once.
"""
from __future__ import annotations

import mmap
import re
import threading
from importlib.resources import files
from itertools import chain
from typing import Any

from lxml import etree

from hub.edxml.bounds import Limits, check as check_bounds
from hub.errors import TooLargeError, ValidationError

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"

_ROOT_TAG = f"{{{NS}}}edXML"
_NS_PREFIX = f"{{{NS}}}"
_DSIG_PREFIX = f"{{{DSIG_NS}}}"
_MAX_SCHEMA_ERRORS = 10

# The prolog may only hold the XML declaration, comments, PIs and whitespace
# before a DOCTYPE.  Scanning it lets us refuse a DTD before libxml2 has read
# a single declaration of it.  Only ASCII-compatible encodings match; UTF-16
# and UTF-32 documents are caught after parsing, through docinfo or, when
# parsing failed, by _declares_doctype.
_PROLOG = re.compile(
    rb"(?:\xef\xbb\xbf)?(?:[ \t\r\n]+|<!--.*?-->|<\?.*?\?>)*", re.DOTALL)

_local = threading.local()
_schema_lock = threading.Lock()
_schema_source: bytes | None = None


# ---------------------------------------------------------------- parse

def _parser() -> etree.XMLParser:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False,
            # huge_tree: attachments of 100 MB are real; it lifts libxml2's
            # 10,000,000-character text-node cap.  Safe here because every DTD
            # (hence every entity) is refused before parsing, and depth is ours.
            dtd_validation=False, huge_tree=True, attribute_defaults=False)
        _local.parser = parser
    return parser


def _depth_probe(max_depth: int) -> etree.XPath:
    """A compiled ``/*/*/.../*`` one step deeper than allowed.

    libxml2 walks it level by level in C, which is far cheaper than tracking
    depth in Python over every element.
    """
    probes: dict[int, etree.XPath] | None = getattr(_local, "probes", None)
    if probes is None:
        probes = _local.probes = {}
    probe = probes.get(max_depth)
    if probe is None:
        probe = probes[max_depth] = etree.XPath("/*" * (max_depth + 1))
    return probe


def parse(raw: bytes, *, max_size: int, max_depth: int = 64,
          limits: Limits = Limits()) -> etree._ElementTree:
    """Parse an incoming edXML message, refusing anything risky or not edXML.

    ``max_depth`` counts the root as depth 1.  libxml2 itself stops at 256
    levels, which is reported as ``xml_too_deep`` too.  ``limits`` bound the
    tree (``hub.edxml.bounds``), checked on the bytes before parsing.
    """
    _check_size(len(raw), max_size)
    if _prolog_has_doctype(raw):
        raise _dtd_forbidden()
    check_bounds(raw, limits)
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        # A billion-laughs document in UTF-16/32 slips past the byte scan and
        # fails on libxml2's amplification limit; it is still a DTD refusal.
        if _declares_doctype(raw):
            raise _dtd_forbidden() from None
        raise _syntax_error(exc, raw[:64]) from None
    return _checked(root, max_depth)


def parse_file(path: Any, size: int, *, max_size: int, max_depth: int = 64,
               limits: Limits = Limits()) -> etree._ElementTree:
    """``parse`` for a body the HTTP layer spooled to disk (``spool.payloads``):
    libxml2 reads the file, so the bytes are never held whole beside the tree
    (the bounds are checked on a read-only mapping of the file)."""
    _check_size(size, max_size)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        if _prolog_has_doctype(head):
            raise _dtd_forbidden()
        if size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                check_bounds(mapped, limits)
    try:
        root = etree.parse(str(path), _parser()).getroot()
    except etree.XMLSyntaxError as exc:
        if _declares_doctype(head, path):
            raise _dtd_forbidden() from None
        raise _syntax_error(exc, head[:64]) from None
    return _checked(root, max_depth)


def _check_size(size: int, max_size: int) -> None:
    if size > max_size:
        raise TooLargeError(
            f"envelope is {size} bytes, more than the {max_size} allowed",
            code="envelope_too_large",
            details={"path": None, "line": None, "size": size, "max_size": max_size})


def _checked(root: etree._Element, max_depth: int) -> etree._ElementTree:
    tree = root.getroottree()
    docinfo = tree.docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        raise _dtd_forbidden()
    _check_constructs(root)
    _check_depth(tree, max_depth)
    if root.tag != _ROOT_TAG:
        raise ValidationError(
            f"root element is {_display_name(root.tag)!r}, not edXML in namespace {NS}",
            code="not_edxml", details={"path": element_path(root), "line": root.sourceline})
    return tree


def _prolog_has_doctype(raw: bytes) -> bool:
    end = _PROLOG.match(raw).end()  # type: ignore[union-attr]  # matches empty
    return raw.startswith(b"<!DOCTYPE", end)


class _DoctypeSeen(Exception):
    """Raised by the probe target to stop parsing at the DOCTYPE."""


class _DoctypeProbe:
    """Parser target that only watches for a DOCTYPE, in any encoding."""

    def doctype(self, *_: object) -> None:
        raise _DoctypeSeen()

    def close(self) -> None:
        return None


def _declares_doctype(raw: bytes, path: Any = None) -> bool:
    """Whether libxml2 meets a DOCTYPE before the document goes wrong.

    Only run on documents that already failed, so a fresh parser per call
    costs nothing on the normal path.  Parsing stops at the DOCTYPE itself,
    before any declaration inside it is read.
    """
    probe = etree.XMLParser(target=_DoctypeProbe(), resolve_entities=False,
                            no_network=True, load_dtd=False, huge_tree=False)
    try:
        if path is not None:
            etree.parse(str(path), probe)
        else:
            etree.fromstring(raw, probe)
    except _DoctypeSeen:
        return True
    except etree.XMLSyntaxError:
        return False
    return False


def _dtd_forbidden() -> ValidationError:
    return ValidationError("a DOCTYPE/DTD is not allowed in edXML",
                           code="xml_dtd_forbidden", details={"path": None, "line": None})


def _looks_like_xml(head: bytes) -> bool:
    """Does the body start like an XML document (after a BOM and blanks), in any encoding?"""
    for bom in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        head = head.removeprefix(bom)
    head = head.replace(b"\x00", b"").lstrip(b" \t\r\n")
    return head.startswith(b"<")


def _syntax_error(exc: etree.XMLSyntaxError, head: bytes = b"<") -> ValidationError:
    line, column = exc.position if exc.position else (exc.lineno, exc.offset)
    details = {"path": None, "line": line, "column": column}
    if not _looks_like_xml(head):
        start = head[:20].decode("utf-8", "replace")
        return ValidationError(f"the body is not XML (it starts {start!r}): an edXML envelope "
                               f"(<edXML xmlns=\"{NS}\">…) is "
                               f"expected, sent with Content-Type: application/xml",
                               code="xml_malformed", details=details)
    message = exc.msg or "not well-formed XML"
    # libxml2 refuses more than 256 levels on its own; that is our limit too.
    if "Excessive depth" in message:
        return ValidationError("document nests elements too deeply",
                               code="xml_too_deep", details=details)
    # Without huge_tree, libxml2 caps one text node at 10,000,000 characters:
    # an attachment over about 7 MB.  For the sender that is "too large".
    if "Text node too long" in message or "huge text node" in message:
        return TooLargeError(
            "a text node (typically an attachment's base64 content) is longer than "
            "the 10,000,000 characters the parser accepts", code="envelope_too_large",
            details=details)
    return ValidationError(f"not well-formed XML: {message}",
                           code="xml_malformed", details=details)


def _check_constructs(root: etree._Element) -> None:
    """Refuse processing instructions and unexpanded entity references.

    The XML declaration is not a PI node, so it never trips this.  Entity
    nodes can only come from a DTD, already refused; this is belt and braces.
    """
    found = next(chain(root.iter(etree.PI, etree.Entity),
                       root.itersiblings(etree.PI, preceding=True),
                       root.itersiblings(etree.PI)), None)
    if found is None:
        return
    parent = found.getparent()
    if isinstance(found, etree._Entity):
        what = f"entity reference &{found.name};"
    else:
        what = f"processing instruction <?{found.target}?>"
    raise ValidationError(
        f"{what} is not allowed in edXML", code="xml_forbidden_construct",
        details={"path": element_path(parent) if parent is not None else "/",
                 "line": found.sourceline})


def _check_depth(tree: etree._ElementTree, max_depth: int) -> None:
    too_deep = _depth_probe(max_depth)(tree)
    if too_deep:
        first = too_deep[0]
        raise ValidationError(
            f"elements nest deeper than {max_depth} levels", code="xml_too_deep",
            details={"path": element_path(first), "line": first.sourceline})


# ---------------------------------------------------------------- validate

def _schema() -> etree.XMLSchema:
    # Compiled per thread (about 1 ms, once): a shared XMLSchema would mix
    # the error logs of concurrent validations.
    schema = getattr(_local, "schema", None)
    if schema is None:
        schema = _local.schema = etree.XMLSchema(etree.fromstring(_schema_bytes(), _parser()))
    return schema


def _schema_bytes() -> bytes:
    global _schema_source
    with _schema_lock:
        if _schema_source is None:
            _schema_source = files("schemas").joinpath("edxml.xsd").read_bytes()
        return _schema_source


def validate(tree: etree._ElementTree) -> None:
    """Validate a parsed message against schemas/edxml.xsd.

    Raises ``ValidationError`` (code ``schema_invalid``) carrying the first
    error as message, path and line, and up to ten errors in ``errors``.
    """
    schema = _schema()
    if not schema.validate(tree):
        errors = [_schema_error(tree, entry)
                  for entry, _ in zip(schema.error_log, range(_MAX_SCHEMA_ERRORS))]
        first = errors[0] if errors else {"line": None, "path": None,
                                          "message": "schema validation failed"}
        raise ValidationError(str(first["message"]), code="schema_invalid",
                              details={"line": first["line"], "path": first["path"],
                                       "errors": errors})
    _check_dsig_children(tree)


def _check_dsig_children(tree: etree._ElementTree) -> None:
    # The schema admits any XML-DSig element in edXMLHeader (XSD 1.0 cannot
    # name a foreign element without a second schema document); only
    # ds:Signature is meant.
    header_dsig = f"{_NS_PREFIX}edXMLEnvelope/{_NS_PREFIX}edXMLHeader/{_DSIG_PREFIX}*"
    for el in tree.getroot().iterfind(header_dsig):
        if el.tag != f"{_DSIG_PREFIX}Signature":
            path = element_path(el)
            message = f"Element '{_display_name(el.tag)}': This element is not expected."
            raise ValidationError(
                message, code="schema_invalid",
                details={"line": el.sourceline, "path": path,
                         "errors": [{"line": el.sourceline, "path": path, "message": message}]})


def _schema_error(tree: etree._ElementTree, entry: Any) -> dict[str, Any]:
    message = entry.message.replace(_NS_PREFIX, "")
    return {"line": entry.line, "path": _normalise_path(tree, entry.path),
            "message": message}


_STEP = re.compile(r"^(?:(?P<prefix>[^:\[\]]+):)?(?P<name>[^:\[\]]+)(?:\[(?P<index>\d+)\])?$")


def _normalise_path(tree: etree._ElementTree, path: str | None) -> str | None:
    """Turn libxml2's node path into ours (``/edXML/.../To[2]/OrganId``).

    libxml2 writes elements of a default namespace as ``*[n]`` (n counted
    over all element siblings) and prefixed ones as ``prefix:name[n]``; we
    walk that path down the tree and re-render the element we land on.
    """
    if not path or not path.startswith("/"):
        return path
    node: etree._Element | None = None
    for step in path[1:].split("/"):
        match = _STEP.match(step)
        if match is None:
            return path
        candidates = _step_candidates(tree, node, match["prefix"], match["name"])
        index = int(match["index"] or 1) - 1
        if index >= len(candidates):
            return path
        node = candidates[index]
    return element_path(node) if node is not None else path


def _step_candidates(tree: etree._ElementTree, node: etree._Element | None,
                     prefix: str | None, name: str) -> list[etree._Element]:
    children = [tree.getroot()] if node is None else [
        c for c in node if isinstance(c.tag, str)]
    if name == "*":
        return children
    return [c for c in children
            if etree.QName(c).localname == name and c.prefix == prefix]


# ---------------------------------------------------------------- paths

def _display_name(tag: str) -> str:
    if tag.startswith(_NS_PREFIX):
        return tag[len(_NS_PREFIX):]
    if tag.startswith(_DSIG_PREFIX):
        return "ds:" + tag[len(_DSIG_PREFIX):]
    return tag


def element_path(el: etree._Element) -> str:
    """``/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To[2]/OrganId``.

    QCVN names are bare, XML-DSig ones ``ds:``-prefixed, others in Clark
    notation; ``[n]`` (1-based) appears only where the name repeats among
    siblings.  Used on error paths only, so clarity beats speed.
    """
    parts: list[str] = []
    node: etree._Element | None = el
    while node is not None:
        parent = node.getparent()
        name = _display_name(node.tag)
        if parent is not None:
            same = list(parent.iterchildren(node.tag))
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))
