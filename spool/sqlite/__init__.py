"""The SQLite spool backend: the embedded default."""
