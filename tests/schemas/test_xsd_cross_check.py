"""A second, independent XSD 1.0 processor (xmlschema) agrees with lxml/libxml2:
our schemas are valid XSD 1.0 and every public sample is valid under them."""
from __future__ import annotations

from importlib.resources import files

import pytest
import xmlschema

from support import FIXTURES, PUBLIC_SAMPLES, SAMPLES, public_sample


@pytest.fixture(scope="module")
def edxml_schema():
    return xmlschema.XMLSchema10(str(files("schemas") / "edxml.xsd"))


@pytest.mark.parametrize("sample", PUBLIC_SAMPLES)
def test_samples_are_valid_for_xmlschema_too(edxml_schema, sample):
    public_sample(sample)
    edxml_schema.validate(str(SAMPLES / sample))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.edxml")))
def test_fixtures_are_valid_for_xmlschema_too(edxml_schema, name):
    edxml_schema.validate(str(FIXTURES / name))


def test_malformed_is_invalid_for_xmlschema_too(edxml_schema):
    bad = (FIXTURES / "status_inbox.edxml").read_text(encoding="utf-8").replace(
        "<edXML:StatusCode>01</edXML:StatusCode>", "<edXML:StatusCode>99</edXML:StatusCode>")
    assert not edxml_schema.is_valid(bad)


def test_receipt_schema_is_valid_xsd():
    xmlschema.XMLSchema10(str(files("schemas") / "receipt.xsd"))
