"""The ``lienthong`` command: one module per command group."""
