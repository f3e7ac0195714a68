"""The fake VXP platform's answer to each operation, from its state (spec section 4).

Sits between ``hub.sim.vxp_platform`` (HTTP, verification, faults) and
``hub.sim.vxp_state`` (what the platform knows): given a verified request,
one function per operation changes or reads the state and gives the answer
body and its Content-Type.  Refusals propagate as ``PlatformRefusal``.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from hub.sim.vxp_state import PlatformRefusal, PlatformState
from hub.vxp.protocol import VerifiedRequest, answer

JSON: Final = "application/json"
#: (state, verified request, list answers doubled by a fault) -> (body, Content-Type)
Handler = Callable[[PlatformState, VerifiedRequest, bool], tuple[bytes, str]]


def _doc_id(v: VerifiedRequest) -> str:
    doc_id = v.doc_id
    if not doc_id:
        raise PlatformRefusal("bad_request", "no docId")
    return doc_id


def _messagetype(v: VerifiedRequest) -> str:
    return v.get("messagetype") or "edoc"


def send_edoc(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    to = v.get("to")
    organs: list[str] | None = None
    if to is not None:
        try:
            organs = [str(item["OrganId"]) for item in json.loads(to)]
        except (ValueError, TypeError, KeyError):
            raise PlatformRefusal("bad_request", 'to is not [{"OrganId": ...}]') from None
    if v.file is None:
        raise PlatformRefusal("bad_request", "sendEdoc without a file")
    doc = state.send(v.system_id, _messagetype(v), v.file, from_=v.get("from"), to=organs)
    # The SDK reads this answer as US-ASCII.
    return answer(DocId=doc.doc_id, ascii_only=True), JSON


def received_list(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    items = [state.received_item(d) for d in state.mailbox(v.system_id, _messagetype(v))]
    if doubled:
        items = [i for item in items for i in (item, item)]
    return answer(data=items), JSON


def get_edoc(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    doc = state.fetch(v.system_id, _doc_id(v))
    return answer(data=base64.b64encode(doc.data).decode("ascii")), JSON


def download_edoc(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    return state.fetch(v.system_id, _doc_id(v)).data, "application/xml"


def update_status(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    state.set_status(v.system_id, _doc_id(v), v.get("status") or "")
    return answer(), JSON


def sent_list(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    items = state.sent_items(v.system_id, _messagetype(v), v.doc_id)
    return answer(data=items * 2 if doubled else items), JSON


def count_edoc(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    return answer(count=len(state.mailbox(v.system_id, "edoc"))), JSON


def count_status(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    return answer(count=len(state.mailbox(v.system_id, "status"))), JSON


def agencies(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    return answer(data=state.agencies()), JSON


def units(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    return answer(data=state.units()), JSON


def refuse(state: PlatformState, v: VerifiedRequest, doubled: bool) -> tuple[bytes, str]:
    raise PlatformRefusal("not_allowed", "agencies are managed by the platform operator")


HANDLERS: Final[Mapping[str, Handler]] = MappingProxyType({
    "sendEdoc": send_edoc, "getReceivedEdocList": received_list, "getEdoc": get_edoc,
    "downloadEdoc": download_edoc, "updateStatus": update_status, "getSentEdocList": sent_list,
    "getAgenciesList": agencies, "getAgenciesListQD20": agencies, "getSynchronizeUnit": units,
    "deleteAgency": refuse, "countReceiveEdoc": count_edoc, "countReceiveStatus": count_status,
})
