"""The national document axis (VXP/VDXP) and its "SDKVXP" wire protocol.

Sits at the edge of the hub, beside the other external systems:

    protocol   pure codec: header signing and verification, timestamps,
               hash-file, answers (no I/O; used by the client and by fakes)
    errors     the client's error tree (temporary / permanent)
    client     an async aiohttp client of a provincial or national platform

The protocol is the one the public Java SDK puts on the wire, described in
``reference/vdxp-sdk-protocol.md`` of the shared tree.
"""
