"""An async client of a VXP platform (national axis or a provincial LGSP in front of it).

Sits at the hub's outer edge, for adapters and tools that exchange documents
with the axis; below it only ``hub.vxp.protocol`` (signing) and the records.
Each call sends what the Java SDK sends (spec section 1): the same path,
method, body shape (sendEdoc: the file + CRLF as application/octet-stream;
others an empty body or ``{}`` with ``Expect: 100-continue``) and the same
signed headers.  Unlike the SDK it signs a fresh timestamp per call, unless
``frozen_timestamp`` or ``accumulate_headers`` asks it to imitate a reused
SDK service object (for testing servers).

Errors (``hub.vxp.errors``).  The rule: a failure is *temporary* when the
same call could succeed later without anyone changing anything — timeouts,
connection trouble, HTTP 5xx/408/429, a 2xx body that is not the SDK's JSON
answer, or ``status: FAIL`` with an ErrorCode in ``retryable_codes``.  It is
*permanent* otherwise: any other FAIL (the real platform's codes are not
published, so an unknown code is taken as a refusal rather than retried
forever), 401 after a fresh token, and 4xx that are not FAIL answers.  An
answer fails when ``status`` is ``FAIL`` (any case) or ``ErrorCode`` is not
``"0"``; HTTP status is otherwise ignored, as the SDK does.  Unlike the SDK,
a getReceivedEdocList body that is not JSON is an error, not an empty list:
a poller must not take a broken platform for an empty mailbox.

OAuth2 (``reference/lgsp.md``): with ``token_url`` set, a client-credentials
token is fetched (HTTP basic auth), sent as ``Authorization: Bearer``, kept
until shortly before ``expires_in``, and on a 401 fetched anew and the call
retried once.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timezone
from typing import Final, Literal, Self, TypeVar

import aiohttp

from hub.clock import Clock
from hub.vxp import errors as E
from hub.vxp.protocol import (
    OPERATIONS,
    VN_TZ,
    Operation,
    format_timestamp,
    gson_string,
    hash_file,
    sign_headers,
)
from hub.vxp.records import (
    Agency,
    DocId,
    ReceivedEdoc,
    RecordError,
    SentEdoc,
    SyncUnit,
    as_string,
    parse_list,
)

log = logging.getLogger("hub.vxp.client")

#: FAIL codes retried by default: HTTP-like server-side codes, and the fake platform's.
DEFAULT_RETRYABLE_CODES: Final = frozenset({"500", "502", "503", "504", "busy", "unavailable",
                                            "internal_error"})
MessageType = Literal["edoc", "status"]
Status = Literal["done", "fail", "processing"]
JsonObject = dict[str, object]
R = TypeVar("R")


def _outside(text: object, limit: int = 200) -> str:
    # Text from the platform goes into messages and logs escaped and bounded.
    return ascii(str(text)[:limit])


def _check_value(name: str, value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name} may not hold CR, LF or NUL")
    return value


class VxpClient:
    """One system's connection to a VXP platform; use as ``async with``, or call ``close()``."""

    def __init__(self, endpoint: str, system_id: str, secret: str, *,
                 session: aiohttp.ClientSession | None = None, timeout: float = 30.0,
                 token_url: str | None = None, client_id: str | None = None,
                 client_secret: str | None = None, clock: Callable[[], float] | None = None,
                 tz: timezone = VN_TZ, frozen_timestamp: bool = False,
                 accumulate_headers: bool = False,
                 retryable_codes: Collection[str] = DEFAULT_RETRYABLE_CODES,
                 file_path: str = "xml", token_margin: float = 30.0) -> None:
        if token_url is not None and (client_id is None or client_secret is None):
            raise ValueError("token_url needs client_id and client_secret")
        self.endpoint = endpoint
        self.system_id = _check_value("system_id", system_id)
        self._secret = secret
        self._session = session
        self._own_session = session is None
        self.timeout = timeout
        self._token_url = token_url
        # RFC 6749 2.3.1: client credentials by HTTP basic auth (built here:
        # aiohttp's BasicAuth is deprecated).
        self._basic = ("Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
                       if client_id is not None and client_secret is not None else None)
        self._clock: Callable[[], float] = clock if clock is not None else Clock()
        self._tz = tz
        self._retryable = frozenset(retryable_codes)
        #: Sent as ``filePath`` on getEdoc/downloadEdoc, as the SDK example does.
        self.file_path = file_path
        self._token_margin = token_margin
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        # A reused SDK object: one timestamp, and a map that only ever grows.
        self._frozen = self._now_stamp() if frozen_timestamp or accumulate_headers else None
        self._accumulated: dict[str, str] | None = {} if accumulate_headers else None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ---------------------------------------------------------------- operations

    async def send_edoc(self, raw: bytes, from_: str, messagetype: MessageType = "edoc",
                        to: Sequence[str] | None = None) -> DocId:
        """Send an edXML document or status; the platform's DocId for it."""
        caller = [("from", from_), ("servicetype", "eDoc"), ("messagetype", messagetype)]
        if to is not None:
            # The SDK keeps "to" as JSON text: [{"OrganId":"..."}].
            caller.append(("to", "[" + ",".join('{"OrganId":' + gson_string(o) + "}"
                                                 for o in to) + "]"))
        answer = await self._json("sendEdoc", caller, file=raw)
        doc_id = as_string(answer, "DocId")
        if not doc_id:
            raise E.VxpBadResponseError("sendEdoc answer has no DocId",
                                        details={"operation": "sendEdoc"})
        return DocId(doc_id)

    async def get_received_edoc_list(self, messagetype: MessageType = "edoc") -> list[ReceivedEdoc]:
        """Items waiting for this system, each docId once (a platform listing one twice
        must not make a poller fetch and deliver it twice)."""
        answer = await self._json("getReceivedEdocList",
                                  [("servicetype", "eDoc"), ("messagetype", messagetype)])
        items = self._records("getReceivedEdocList", answer, ReceivedEdoc.from_json)
        unique = {item.doc_id: item for item in reversed(items)}
        return [item for item in items if unique.get(item.doc_id) is item]

    async def get_edoc(self, doc_id: str) -> bytes:
        """The document's bytes (the answer's ``data``, base64-decoded)."""
        answer = await self._json("getEdoc", [("filePath", self.file_path), ("docId", doc_id)])
        data = answer.get("data")
        if not isinstance(data, str):
            raise E.VxpBadResponseError("getEdoc answer has no data string",
                                        details={"operation": "getEdoc"})
        try:
            # commons-codec is lenient: whitespace and stray characters are skipped.
            return base64.b64decode(data, validate=False)
        except binascii.Error as exc:
            raise E.VxpBadResponseError(f"getEdoc data is not base64: {exc}",
                                        details={"operation": "getEdoc"}) from None

    async def update_status(self, doc_id: str, status: Status, *, key: str = "docId") -> None:
        """Confirm a received item; ``key="docid"`` imitates callers that spell it so."""
        await self._json("updateStatus", [("status", status), (key, doc_id)])

    async def get_sent_edoc_list(self, doc_id: str | None = None,
                                 messagetype: MessageType = "edoc") -> list[SentEdoc]:
        caller = [("servicetype", "eDoc"), ("messagetype", messagetype)]
        if doc_id is not None:
            caller.append(("docId", doc_id))
        answer = await self._json("getSentEdocList", caller)
        return self._records("getSentEdocList", answer, SentEdoc.from_json)

    async def get_agencies_list(self) -> list[Agency]:
        answer = await self._json("getAgenciesList", [])
        return self._records("getAgenciesList", answer, Agency.from_json)

    async def get_agencies_list_qd20(self, level: str | int = "1") -> list[Agency]:
        answer = await self._json("getAgenciesListQD20", [("level", str(level))])
        return self._records("getAgenciesListQD20", answer, Agency.from_json)

    async def get_synchronize_unit(self) -> list[SyncUnit]:
        answer = await self._json("getSynchronizeUnit", [])
        return self._records("getSynchronizeUnit", answer, SyncUnit.from_json)

    async def count_receive_edoc(self) -> int:
        return self._count("countReceiveEdoc", await self._json("countReceiveEdoc", []))

    async def count_receive_status(self) -> int:
        return self._count("countReceiveStatus", await self._json("countReceiveStatus", []))

    async def download_edoc(self, doc_id: str) -> bytes:
        """The document's raw bytes by the signed GET (not JSON)."""
        status, raw = await self._call("downloadEdoc",
                                       [("filePath", self.file_path), ("docId", doc_id)])
        parsed = self._parse(raw)
        if parsed is not None or status >= 300:
            # A JSON answer, or an error status: the generic rules say which error.
            self._check("downloadEdoc", status, parsed)
            raise E.VxpBadResponseError("downloadEdoc answered JSON, not a document",
                                        details={"operation": "downloadEdoc"})
        if not raw:
            raise E.VxpBadResponseError("downloadEdoc answered an empty body",
                                        details={"operation": "downloadEdoc"})
        return raw

    # ---------------------------------------------------------------- answers

    @staticmethod
    def _records(op: str, answer: JsonObject, make: Callable[[Mapping[str, object]], R]
                 ) -> list[R]:
        try:
            return parse_list(answer.get("data"), make)
        except RecordError as exc:
            raise E.VxpBadResponseError(f"{op}: {exc}", details={"operation": op}) from None

    @staticmethod
    def _count(op: str, answer: JsonObject) -> int:
        count = answer.get("count")
        if isinstance(count, bool) or not isinstance(count, int | str):
            raise E.VxpBadResponseError(f"{op} answer has no count", details={"operation": op})
        try:
            return int(count)
        except ValueError:
            raise E.VxpBadResponseError(f"{op} count is not a number",
                                        details={"operation": op}) from None

    @staticmethod
    def _parse(raw: bytes) -> JsonObject | None:
        """The body as an SDK answer object (status, ErrorCode, ErrorDesc present), else None."""
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(parsed, dict) or not {"status", "ErrorCode", "ErrorDesc"} <= parsed.keys():
            return None
        return parsed

    def _check(self, op: str, status: int, answer: JsonObject | None) -> JsonObject:
        """``answer`` if it is a success, else the error the module docstring's rule gives."""
        details: dict[str, object] = {"operation": op, "http_status": status}
        if status >= 500 or status in (408, 429):
            raise E.VxpServerError(f"{op}: HTTP {status}", details=details)
        if status == 401:
            raise E.VxpAuthRejectedError(f"{op}: HTTP 401 (credentials refused)", details=details)
        if answer is None:
            if 200 <= status < 300:
                raise E.VxpBadResponseError(f"{op}: body is not a JSON answer", details=details)
            raise E.VxpHttpError(f"{op}: HTTP {status}", details=details)
        code = as_string(answer, "ErrorCode") or ""
        if str(answer.get("status", "")).upper() == "FAIL" or code != "0":
            details["error_code"] = code
            message = f"{op}: FAIL {_outside(code)} {_outside(answer.get('ErrorDesc', ''))}"
            if code in self._retryable:
                raise E.VxpRetryableFail(message, details=details)
            raise E.VxpRefusedError(message, details=details)
        if not 200 <= status < 300:
            raise E.VxpHttpError(f"{op}: HTTP {status} with a success answer", details=details)
        return answer

    async def _json(self, op: str, caller: list[tuple[str, str]], *,
                    file: bytes | None = None) -> JsonObject:
        status, raw = await self._call(op, caller, file=file)
        return self._check(op, status, self._parse(raw))

    # ---------------------------------------------------------------- transport

    def _now_stamp(self) -> str:
        return format_timestamp(datetime.fromtimestamp(self._clock(), self._tz), self._tz)

    def _logical(self, op: Operation, caller: list[tuple[str, str]],
                 file: bytes | None) -> list[tuple[str, str]]:
        pairs = [("timestamp", self._frozen or self._now_stamp()), ("systemid", self.system_id),
                 ("Content-Type", op.content_type)]
        pairs += [(name, _check_value(name, value)) for name, value in caller]
        if file is not None:
            pairs.append(("hash-file", hash_file(file)))
        if self._accumulated is None:
            return pairs
        for name, value in pairs:   # dict keeps each name where it was first put
            self._accumulated[name] = value
        return list(self._accumulated.items())

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _call(self, name: str, caller: list[tuple[str, str]], *,
                    file: bytes | None = None) -> tuple[int, bytes]:
        op = OPERATIONS[name]
        headers = sign_headers(self._logical(op, caller, file), self._secret)
        body = {"file": (file or b"") + b"\r\n", "braces": b"{}", "empty": b"",
                "none": None}[op.body]
        url = self.endpoint + "/" + name
        for attempt in (1, 2):
            token = await self._bearer()
            sent = dict(headers)
            if token is not None:
                sent["Authorization"] = "Bearer " + token
            status, raw = await self._send(name, op.method, url, sent, body, op.expect_continue)
            if status == 401 and token is not None and attempt == 1:
                log.info("%s: 401 with a cached token; fetching a new one", name)
                self._forget(token)
                continue
            return status, raw
        raise AssertionError("unreachable")

    async def _send(self, op: str, method: str, url: str, headers: dict[str, str],
                    body: bytes | None, expect100: bool = False) -> tuple[int, bytes]:
        details: dict[str, object] = {"operation": op}
        try:
            async with self._http().request(
                    method, url, data=body, headers=headers, expect100=expect100,
                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                return resp.status, await resp.read()
        except TimeoutError:
            raise E.VxpTimeoutError(f"{op}: no answer within {self.timeout}s",
                                    details=details) from None
        except aiohttp.ClientError as exc:
            raise E.VxpConnectionError(f"{op}: {type(exc).__name__}: {_outside(exc)}",
                                       details=details) from None

    # ---------------------------------------------------------------- OAuth2

    def _forget(self, token: str) -> None:
        # Only the token that failed: a concurrent call may already hold a new one.
        if self._token == token:
            self._token = None

    async def _bearer(self) -> str | None:
        if self._token_url is None:
            return None
        async with self._token_lock:
            if self._token is None or self._clock() >= self._token_expires:
                self._token, self._token_expires = await self._fetch_token(self._token_url)
            return self._token

    async def _fetch_token(self, url: str) -> tuple[str, float]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self._basic is not None:
            headers["Authorization"] = self._basic
        status, raw = await self._send("token", "POST", url, headers,
                                       b"grant_type=client_credentials")
        details: dict[str, object] = {"operation": "token", "http_status": status}
        if status >= 500 or status in (408, 429):
            raise E.VxpServerError(f"token: HTTP {status}", details=details)
        if status >= 400:
            raise E.VxpAuthRejectedError(f"token: HTTP {status}: {_outside(raw)}", details=details)
        try:
            parsed = json.loads(raw)
            token = parsed["access_token"]
            lifetime = float(parsed.get("expires_in", 3600))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise E.VxpBadResponseError("token: answer has no access_token",
                                        details=details) from None
        if not isinstance(token, str) or not token:
            raise E.VxpBadResponseError("token: access_token is not a string", details=details)
        margin = min(self._token_margin, lifetime / 2)
        return token, self._clock() + lifetime - margin
