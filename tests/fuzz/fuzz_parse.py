"""A coverage-guided fuzz target (atheris) for the parsing path of cleanup.

    python tests/fuzz/fuzz_parse.py [libFuzzer options] CORPUS_DIR...

Each input goes the way an envelope goes in ``hub.cleanup.cpu.Cleaner``:
``xmlsafe.parse`` (size, DTD refusal, ``hub.edxml.bounds``, hardened lxml),
``xmlsafe.validate`` (the XSD), ``envelope.extract`` (both Organ-ID
policies), then ``signing.verify_sender`` under every signature policy
(the signature inventory, XML-DSig verification against a development
trust store) and ``signing.verify_hop``.  Refusing is the job: only
``hub.errors.HubError`` (with its stable code) may come out.  Anything else
escaping is a crash, which libFuzzer reports and saves as ``crash-*``.

tests/fuzz/test_fuzz.py runs this for a bounded time in the suite; seed
inputs are in tests/fuzz/corpus/ (tests/fuzz/make_corpus.py writes them).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["hub"]):
    from hub.config import build_settings
    from hub.crypto import signing
    from hub.crypto.keys import init_dev_keys
    from hub.crypto.setup import load_crypto
    from hub.directory import load_directory
    from hub.edxml import bounds
    from hub.edxml import envelope as edxml
    from hub.edxml import xmlsafe
    from hub.errors import HubError

SENDER = "000.01.48.H63"  #: one organisation with a development key (signed seeds use it)


def _setup():  # type: ignore[no-untyped-def]
    keys = Path(tempfile.mkdtemp(prefix="lt-fuzz-keys-"))
    directory = load_directory(build_settings({}))
    init_dev_keys(keys, directory.hub.id, [SENDER])
    settings = build_settings({"data_dir": str(keys / "var"), "hub_key_file": str(keys / "hub.key"),
                               "hub_cert_file": str(keys / "hub.pem"),
                               "trust_ca_file": str(keys / "ca.pem")})
    hub_keys, trust = load_crypto(settings, directory)
    return settings, hub_keys, trust


SETTINGS, KEYS, TRUST = _setup()
LIMITS = bounds.Limits.from_settings(SETTINGS)
FIELDS = edxml.FieldLimits.from_settings(SETTINGS)


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris looks for)
    try:
        tree = xmlsafe.parse(data, max_size=SETTINGS.max_envelope_size,
                             max_depth=SETTINGS.max_xml_depth, limits=LIMITS)
        xmlsafe.validate(tree)
        env = edxml.extract(tree, strict=False, limits=FIELDS)
        try:
            edxml.extract(tree, strict=True, limits=FIELDS)
        except HubError:
            pass
        for policy in signing.POLICIES:
            try:
                signing.verify_sender(tree.getroot(), env.sender, TRUST, policy)
            except HubError:
                pass
        signing.verify_hop(data, KEYS.cert)
    except HubError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
