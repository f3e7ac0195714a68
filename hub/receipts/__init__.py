"""Signed receipts: the issuer (from the event log) and the receipt XML."""
