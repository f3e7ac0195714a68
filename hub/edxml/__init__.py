"""The edXML format: hardened parse, envelope fields, samples."""
