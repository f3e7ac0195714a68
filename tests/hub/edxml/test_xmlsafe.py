"""hub.xmlsafe: hostile XML is refused with its own code, and nothing outside
the bytes handed in is ever read (no file, no network)."""
from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lxml import etree

from hub.edxml import xmlsafe
from hub.errors import TooLargeError, ValidationError

from support import PUBLIC_SAMPLES, fixture, public_sample  # noqa: E402
NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
MAX = 1_000_000


def refused(raw: bytes, code: str, **kwargs: int) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        xmlsafe.parse(raw, max_size=kwargs.pop("max_size", MAX), **kwargs)
    assert info.value.code == code, info.value
    assert {"path", "line"} <= info.value.details.keys()
    return info.value


def utf16(text: str) -> bytes:
    # UTF-16 hides the DOCTYPE from the byte-level prolog scan, so these
    # documents reach libxml2 and test that its own configuration is safe.
    return ('<?xml version="1.0" encoding="UTF-16"?>' + text).encode("utf-16")


def status_inbox() -> bytes:
    return fixture("status_inbox.edxml")


@pytest.fixture()
def web() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 that records every request."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            hits.append(self.path)
            body = b'<!ENTITY x "leaked">'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture()
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe: opening it for reading blocks until someone writes, so a
    parser that so much as opens it hangs (and the test notices)."""
    path = tmp_path / "secret"
    os.mkfifo(path)
    yield path
    try:  # release a reader stuck on the pipe, if the test failed that way
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def parse_in_thread(raw: bytes) -> BaseException | None:
    """Parse in a thread; fail if it blocks (it tried to read a FIFO)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            xmlsafe.parse(raw, max_size=MAX)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "parser blocked opening a file it must never read"
    return outcome[0]


# ---------------------------------------------------------------- acceptance

@pytest.mark.parametrize("name", PUBLIC_SAMPLES)
def test_samples_parse(name: str) -> None:
    tree = xmlsafe.parse(public_sample(name), max_size=MAX)
    assert isinstance(tree, etree._ElementTree)
    assert tree.getroot().tag == f"{{{NS}}}edXML"


def test_comments_and_xml_declaration_are_fine() -> None:
    raw = status_inbox().replace(b"?>", b"?>\n<!-- exported by QLVB -->", 1)
    xmlsafe.parse(raw, max_size=MAX)


# ---------------------------------------------------------------- entities and DTDs

def test_billion_laughs() -> None:
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    raw = (f'<?xml version="1.0"?><!DOCTYPE edXML [<!ENTITY lol0 "lol">{entities}]>'
           f'<edXML xmlns="{NS}">&lol9;</edXML>').encode()
    started = time.perf_counter()
    refused(raw, "xml_dtd_forbidden")
    assert time.perf_counter() - started < 1.0


def test_billion_laughs_behind_utf16() -> None:
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    raw = utf16(f'<!DOCTYPE edXML [<!ENTITY lol0 "lol">{entities}]><edXML xmlns="{NS}">&lol9;</edXML>')
    started = time.perf_counter()
    refused(raw, "xml_dtd_forbidden")
    assert time.perf_counter() - started < 1.0


def test_dtd_in_utf32() -> None:
    raw = f'<!DOCTYPE edXML [<!ENTITY x "y">]><edXML xmlns="{NS}">&x;</edXML>'.encode("utf-32")
    refused(raw, "xml_dtd_forbidden")


def test_external_entity_to_etc_passwd() -> None:
    raw = (f'<!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
           f'<edXML xmlns="{NS}">&xxe;</edXML>').encode()
    err = refused(raw, "xml_dtd_forbidden")
    assert "root:" not in str(err.to_dict())


def test_external_entity_is_never_opened(fifo: Path) -> None:
    for raw in (
        f'<!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file://{fifo}">]><edXML xmlns="{NS}">&xxe;</edXML>'.encode(),
        utf16(f'<!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file://{fifo}">]><edXML xmlns="{NS}">&xxe;</edXML>'),
        utf16(f'<!DOCTYPE edXML SYSTEM "{fifo}"><edXML xmlns="{NS}"/>'),
    ):
        err = parse_in_thread(raw)
        assert isinstance(err, ValidationError) and err.code == "xml_dtd_forbidden"


def test_external_dtd_over_http(web: tuple[str, list[str]]) -> None:
    base, hits = web
    for raw in (
        f'<!DOCTYPE edXML SYSTEM "{base}/edxml.dtd"><edXML xmlns="{NS}"/>'.encode(),
        f'<!DOCTYPE edXML PUBLIC "-//X//Y" "{base}/pub.dtd"><edXML xmlns="{NS}"/>'.encode(),
        utf16(f'<!DOCTYPE edXML SYSTEM "{base}/edxml.dtd"><edXML xmlns="{NS}"/>'),
    ):
        refused(raw, "xml_dtd_forbidden")
    assert hits == []


def test_schema_location_hints_are_ignored(web: tuple[str, list[str]]) -> None:
    base, hits = web
    xsi = f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="{NS} {base}/a.xsd"'
    raw = status_inbox().replace(f'<edXML xmlns="{NS}">'.encode(), f'<edXML xmlns="{NS}" {xsi}>'.encode(), 1)
    xmlsafe.validate(xmlsafe.parse(raw, max_size=MAX))
    assert hits == []


def test_parameter_entities(web: tuple[str, list[str]], fifo: Path) -> None:
    base, hits = web
    for subset in (f'<!ENTITY % remote SYSTEM "{base}/p.dtd"> %remote;',
                   f'<!ENTITY % local SYSTEM "file://{fifo}"> %local;',
                   '<!ENTITY % inner "<!ENTITY x \'y\'>"> %inner;'):
        for raw in (f'<!DOCTYPE edXML [{subset}]><edXML xmlns="{NS}">&x;</edXML>'.encode(),
                    utf16(f'<!DOCTYPE edXML [{subset}]><edXML xmlns="{NS}"/>')):
            err = parse_in_thread(raw)
            assert isinstance(err, ValidationError) and err.code == "xml_dtd_forbidden"
    assert hits == []


def test_doctype_after_comments_and_declaration() -> None:
    raw = b'\xef\xbb\xbf<?xml version="1.0"?>\r\n<!-- a --><!-- <edXML> -->\n<!DOCTYPE edXML><edXML/>'
    refused(raw, "xml_dtd_forbidden")


def test_doctype_text_inside_cdata_is_not_a_doctype() -> None:
    raw = status_inbox().replace(b"<edXML:Description>", b"<edXML:Description><![CDATA[<!DOCTYPE x>]]>", 1)
    tree = xmlsafe.parse(raw, max_size=MAX)
    xmlsafe.validate(tree)


def test_undeclared_entity_is_malformed() -> None:
    refused(f'<edXML xmlns="{NS}">&nbsp;</edXML>'.encode(), "xml_malformed")


# ---------------------------------------------------------------- other constructs

def test_xinclude_is_not_processed(fifo: Path) -> None:
    include = (f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file://{fifo}" parse="text"/>'
               '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>')
    raw = status_inbox().replace(b"<edXML:StatusCode>", include.encode() + b"<edXML:StatusCode>", 1)
    assert parse_in_thread(raw) is None  # parsing is harmless: nothing is fetched
    tree = xmlsafe.parse(raw, max_size=MAX)
    assert b"root:" not in etree.tostring(tree)
    with pytest.raises(ValidationError) as info:
        xmlsafe.validate(tree)  # and the schema refuses the foreign element
    assert info.value.code == "schema_invalid"
    assert "XInclude}include" in info.value.details["path"]


def test_processing_instruction_before_root() -> None:
    raw = status_inbox().replace(b"?>", b'?>\n<?xml-stylesheet href="http://x/evil.xsl"?>', 1)
    err = refused(raw, "xml_forbidden_construct")
    assert err.details["path"] == "/"


def test_processing_instruction_inside() -> None:
    raw = status_inbox().replace(b"<edXML:StatusCode>", b"<?php echo 1; ?><edXML:StatusCode>", 1)
    err = refused(raw, "xml_forbidden_construct")
    assert err.details["path"] == "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader"
    assert err.details["line"] == raw[:raw.index(b"<?php")].count(b"\n") + 1


def test_processing_instruction_after_root() -> None:
    refused(status_inbox() + b"<?trailer?>", "xml_forbidden_construct")


# ---------------------------------------------------------------- depth and size

def test_deep_nesting_10000_levels() -> None:
    raw = f'<edXML xmlns="{NS}">'.encode() + b"<a>" * 10_000 + b"</a>" * 10_000 + b"</edXML>"
    err = refused(raw, "xml_too_deep")
    assert err.details["line"] == 1


def test_depth_just_over_the_limit() -> None:
    raw = f'<edXML xmlns="{NS}">'.encode() + b"<a>" * 64 + b"</a>" * 64 + b"</edXML>"
    err = refused(raw, "xml_too_deep")  # 65 levels, limit 64
    assert err.details["path"] == "/edXML" + "/a" * 64


def test_depth_at_the_limit_is_fine() -> None:
    raw = f'<edXML xmlns="{NS}">'.encode() + b"<a>" * 9 + b"</a>" * 9 + b"</edXML>"
    xmlsafe.parse(raw, max_size=MAX, max_depth=10)
    refused(raw, "xml_too_deep", max_depth=9)


def test_oversize_input() -> None:
    raw = status_inbox()
    with pytest.raises(TooLargeError) as info:
        xmlsafe.parse(raw, max_size=len(raw) - 1)
    assert info.value.code == "envelope_too_large"
    assert info.value.http_status == 413
    xmlsafe.parse(raw, max_size=len(raw))  # exactly the limit is allowed


def test_text_node_over_libxml2_default_cap_is_accepted() -> None:
    # libxml2 caps a text node at 10,000,000 characters unless huge_tree is on;
    # attachments of tens of MB are real, so the hub lifts the cap (DTDs stay refused).
    raw = (f'<edXML xmlns="{NS}"><AttachmentEncoded><Attachment><ContentTransferEncoded>'.encode()
           + b"A" * 10_000_001 + b"</ContentTransferEncoded></Attachment></AttachmentEncoded></edXML>")
    tree = xmlsafe.parse(raw, max_size=len(raw))
    assert len(tree.getroot()[0][0][0].text) == 10_000_001


def test_a_big_text_node_outside_an_attachment_is_refused() -> None:
    # Only an attachment's base64 may be huge; anywhere else max_xml_text bounds a text node.
    raw = f'<edXML xmlns="{NS}"><AttachmentEncoded>'.encode() + b"A" * 2_000_000 + b"</AttachmentEncoded></edXML>"
    refused(raw, "xml_text_too_long", max_size=len(raw))


def test_oversize_is_refused_before_parsing() -> None:
    # Garbage that is too big must be refused for its size, not parsed.
    with pytest.raises(TooLargeError):
        xmlsafe.parse(b"\x00" * 2_000, max_size=1_000)


# ---------------------------------------------------------------- not XML, not edXML

@pytest.mark.parametrize("raw", [b"", b"\x00\x01\x02garbage", b"%PDF-1.4\n", b'{"edXML": 1}',
                                 b"<edXML", b"<a></b>", b"\xff\xfe\x00<"],
                         ids=["empty", "binary", "pdf", "json", "truncated", "mismatched", "bad-bom"])
def test_not_xml(raw: bytes) -> None:
    err = refused(raw, "xml_malformed")
    assert isinstance(err.details["line"], int)
    assert "column" in err.details


def test_malformed_reports_line_and_column() -> None:
    raw = status_inbox().replace(b"</edXML:Fax>", b"</edXML:Fx>", 1)
    err = refused(raw, "xml_malformed")
    assert err.details["line"] == 13
    assert err.details["column"] > 1


@pytest.mark.parametrize("raw", [
    b"<edXML/>",
    b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2015"/>',
    f'<edXMLEnvelope xmlns="{NS}"/>'.encode(),
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"/>',
], ids=["no-namespace", "other-namespace", "envelope-as-root", "soap"])
def test_wrong_root(raw: bytes) -> None:
    err = refused(raw, "not_edxml")
    assert err.details["line"] == 1


# ---------------------------------------------------------------- threads

def test_concurrent_parse_and_validate_keep_their_own_errors() -> None:
    good = status_inbox()
    bad = good.replace(b">01<", b">99<", 1)

    def run(i: int) -> str:
        raw = bad if i % 2 else good
        try:
            xmlsafe.validate(xmlsafe.parse(raw, max_size=MAX))
            return "ok"
        except ValidationError as exc:
            return exc.details["path"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, range(400)))
    assert results[0::2] == ["ok"] * 200
    assert results[1::2] == ["/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/StatusCode"] * 200
