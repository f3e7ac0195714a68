"""The hash-chained audit log: its auditor, checkpoints and verification."""
