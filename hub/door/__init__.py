"""The national-SDK door: agency software written for the axis's SDKVXP talks to the hub
(``service``: the operations; ``credentials``: system ids and secrets; ``refusals``: the
bounded audit trail of refused calls).  Its HTTP edge is ``hub.api.door``."""
