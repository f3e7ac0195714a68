"""The hostile-input corpus: each case a small recipe, built at test time.

Some cases are tens of megabytes, so none is committed as a file: a recipe
names the attack, how to make its bytes, and what the hub must answer (HTTP
status and stable error code) within which bounds of time and memory.  The
bytes are built around ``hub.edxml.samples.edoc`` (a well-formed, schema-valid
document from MAU_A to VP_UBND), so each case is otherwise a real envelope and
fails for its one reason.

``python tests/hostile/hostile_cases.py DIR`` writes every case to DIR (for a
fuzzer, or to replay one with curl).
"""
from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path
from typing import Callable

from hub.edxml import samples

MAU_A = "000.01.48.H63"
VP_UBND = "000.31.48.H63"
_counter = itertools.count(1)


def edoc(**kwargs: object) -> bytes:
    """A fresh valid document (its own DocumentId) from MAU_A to VP_UBND."""
    kwargs.setdefault("number", f"{next(_counter)}-hostile")
    return samples.edoc(MAU_A, [VP_UBND], **kwargs)  # type: ignore[arg-type]


def in_other_info(payload: bytes) -> bytes:
    """A valid document carrying ``payload`` inside OtherInfo/ReplyFors (opaque to the schema)."""
    anchor = b"<edXML:PageAmount>1</edXML:PageAmount>"
    return edoc().replace(anchor, b"<edXML:ReplyFors>" + payload + b"</edXML:ReplyFors>" + anchor, 1)


def with_doctype(doctype: str, ref: str = "&e;", encoding: str = "UTF-8") -> bytes:
    """A document whose Subject references an entity of an internal DTD."""
    text = edoc().decode("utf-8")
    decl, rest = text.split("\n", 1)
    rest = rest.replace("V/v triển khai", ref + " V/v triển khai", 1)
    out = f'<?xml version="1.0" encoding="{encoding}"?>\n{doctype}\n{rest}'
    codec = {"UTF-16": "utf-16", "ISO-8859-1": "iso-8859-1"}.get(encoding, "utf-8")
    if codec == "iso-8859-1":
        out = out.encode("ascii", "xmlcharrefreplace").decode("ascii")
    return out.encode(codec)


def replace_text(old: str, new: str) -> Callable[[], bytes]:
    def build() -> bytes:
        raw = edoc().decode("utf-8")
        assert old in raw, old
        return raw.replace(old, new, 1).encode("utf-8")
    return build


def many_recipients(count: int) -> bytes:
    to = "".join(f"<edXML:To><edXML:OrganId>000.{i // 100 % 100:02d}.{i % 100:02d}.Z{i // 10000:02d}"
                 f"</edXML:OrganId></edXML:To>" for i in range(count))
    return edoc().replace(b"<edXML:DocumentId>", to.encode() + b"<edXML:DocumentId>", 1)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    status: int
    code: str
    seconds: float = 5.0   #: the answer comes within this long (wall clock)
    megabytes: int = 200   #: the hub's peak memory grows by less than this


XXE_FILE = '<!DOCTYPE edXML [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
XXE_NET = '<!DOCTYPE edXML [<!ENTITY e SYSTEM "http://127.0.0.1:9/x">]>'
XXE_PARAM = '<!DOCTYPE edXML [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>'
LAUGHS = ("<!DOCTYPE edXML [<!ENTITY e0 \"lol\">"
          + "".join(f'<!ENTITY e{i} "{("&e%d;" % (i - 1)) * 10}">' for i in range(1, 10)) + "]>")
QUADRATIC = '<!DOCTYPE edXML [<!ENTITY e "' + "x" * 50_000 + '">]>'

CASES: list[Case] = [
    # Entities and DTDs, in the encodings a parser may be tricked through.
    *[Case(f"xxe-{kind}-{enc}", (lambda d=d, enc=enc: with_doctype(d, encoding=enc)), 422,
           "xml_dtd_forbidden")
      for kind, d in (("file", XXE_FILE), ("network", XXE_NET), ("parameter", XXE_PARAM))
      for enc in ("UTF-8", "UTF-16", "ISO-8859-1")],
    Case("billion-laughs", lambda: with_doctype(LAUGHS, "&e9;"), 422, "xml_dtd_forbidden"),
    Case("billion-laughs-utf16", lambda: with_doctype(LAUGHS, "&e9;", "UTF-16"), 422,
         "xml_dtd_forbidden"),
    Case("quadratic-blowup", lambda: with_doctype(QUADRATIC, "&e;" * 2000), 422,
         "xml_dtd_forbidden"),
    # Shapes of tree that cost far more than their bytes.
    Case("deep-nesting", lambda: in_other_info(b"<a>" * 200 + b"</a>" * 200), 422, "xml_too_deep"),
    Case("deeper-than-libxml2", lambda: in_other_info(b"<a>" * 5000 + b"</a>" * 5000), 422,
         "xml_too_deep"),
    Case("many-attributes-100k", lambda: in_other_info(
        b"<x " + b" ".join(b'a%d="v"' % i for i in range(100_000)) + b"/>"), 413,
         "too_many_attributes"),
    Case("many-attributes-on-many-elements", lambda: in_other_info(
        b"".join(b"<x " + b" ".join(b'a%d="v"' % i for i in range(200)) + b"/>" for _ in range(600))),
         413, "too_many_attributes"),
    Case("many-elements-20MiB", lambda: in_other_info(b"<a/>" * (5 << 20)), 413,
         "too_many_elements", seconds=10, megabytes=400),
    Case("many-namespaces", lambda: in_other_info(b"".join(
        b'<x xmlns:p%d="urn:%d"/>' % (i, i) for i in range(1000))), 413, "too_many_namespaces"),
    Case("huge-attribute-value", lambda: in_other_info(b'<x a="' + b"v" * (2 << 20) + b'"/>'), 413,
         "xml_text_too_long"),
    Case("huge-text-node", lambda: in_other_info(b"<x>" + b"t" * (2 << 20) + b"</x>"), 413,
         "xml_text_too_long"),
    Case("huge-comment", lambda: in_other_info(b"<!--" + b"c" * (2 << 20) + b"-->"), 413,
         "xml_text_too_long"),
    Case("huge-subject", replace_text("V/v triển khai", "S" * (200 << 10)), 413, "field_too_long"),
    Case("recipients-10001", lambda: many_recipients(10_001), 413, "too_many_recipients"),
    # Identifiers that would forge a log line or display in another order.
    Case("document-id-newline", replace_text(f"{MAU_A},2026/11/20,", f"{MAU_A},2026/11/20,\nX"),
         422, "bad_identifier"),
    Case("document-id-bidi", replace_text(f"{MAU_A},2026/11/20,", f"{MAU_A},2026/11/20,\u202e"),
         422, "bad_identifier"),
    Case("code-c1-control", replace_text("<edXML:CodeNotation>UBND", "<edXML:CodeNotation>UB\u0085ND"),
         422, "bad_identifier"),
    # Bytes that are not (our) XML.
    Case("invalid-utf8", lambda: edoc().replace("triển".encode(), b"tri\xc3\x28n", 1), 422,
         "xml_malformed"),
    Case("unknown-encoding-declared", lambda: b'<?xml version="1.0" encoding="X-HOSTILE-7"?>\n'
         + edoc().split(b"\n", 1)[1], 422, "unsupported_encoding"),
    Case("ebcdic", lambda: edoc().decode("utf-8").replace("UTF-8", "IBM037").encode(
        "cp037", "replace"), 422, "unsupported_encoding"),
    Case("wrong-namespace", lambda: edoc().replace(b"http://www.mic.gov.vn/TBT/QCVN_102_2016",
                                                   b"urn:not-edxml"), 422, "not_edxml"),
    Case("truncated", lambda: edoc()[:1500], 422, "xml_malformed"),
    Case("manifest-mismatch", lambda: edoc().replace(b"<ContentId>cid:1</ContentId>",
                                                     b"<ContentId>cid:2</ContentId>", 1), 422,
         "attachment_mismatch"),
    Case("spoofed-from", lambda: samples.edoc(VP_UBND, [MAU_A], number=f"{next(_counter)}-spoof"),
         403, "sender_mismatch"),
]
BY_NAME = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-cases")
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        (out / f"{case.name}.xml").write_bytes(case.build())
        print(f"{case.name}.xml\t{case.status} {case.code}")
