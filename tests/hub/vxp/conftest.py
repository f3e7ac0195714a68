"""The VXP fixtures (tests/vxp_support.py): a fake platform on 127.0.0.1 and clients of it."""
from vxp_support import client_a, client_b, gateway, platform  # noqa: F401
