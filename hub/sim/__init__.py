"""Simulators of the external systems the hub talks to, runnable on their own.

They live in the package (not under tests/) because the README walkthrough
runs them (``lienthong fake-platform``) next to a real hub.

    vxp_state      a VXP platform's state: systems, documents, mailboxes, counters
    vxp_answers    each operation's answer from the state
    vxp_faults     failure injection and the OAuth2 gateway's tokens
    vxp_platform   the aiohttp server speaking the SDKVXP protocol, and its CLI
"""
