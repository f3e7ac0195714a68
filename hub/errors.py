"""One error tree for the whole hub.

Every refusal the hub makes is one of these classes.  Each carries a stable,
machine-readable ``code`` (part of the contract: clients switch on it), a
human message, and optional ``details`` (for XML problems: the path and line).
Translation to HTTP happens in one place only, ``hub.api``, by ``http_status``.
"""
from __future__ import annotations

from typing import Any


class HubError(Exception):
    """Raised when the hub refuses or fails an operation; base of all errors."""

    code = "hub_error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None,
                 details: dict[str, Any] | None = None,
                 http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.details: dict[str, Any] = details or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (cleanup workers): keep code and details.
        return (_rebuild, (type(self), self.message, self.code, self.details, self.http_status))

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


def _rebuild(cls: type[HubError], message: str, code: str, details: dict[str, Any],
             http_status: int) -> HubError:
    return cls(message, code=code, details=details, http_status=http_status)


class ValidationError(HubError):
    """Raised when an envelope is malformed, invalid or semantically wrong."""

    code = "invalid_envelope"
    http_status = 422


class BadRequestError(HubError):
    """Raised when a request cannot be read as HTTP says it should (a body that is not
    in the Content-Encoding it names, a broken chunked body)."""

    code = "bad_request"
    http_status = 400


class RequestTimeoutError(HubError):
    """Raised when a client sends its request body too slowly (``body_read_timeout``,
    ``min_body_rate``)."""

    code = "request_timeout"
    http_status = 408


class RateLimitedError(HubError):
    """Raised when one address or identity sends more requests than its rate limit."""

    code = "rate_limited"
    http_status = 429


class TooLargeError(ValidationError):
    """Raised when a body is larger than ``max_envelope_size``."""

    code = "envelope_too_large"
    http_status = 413


class ConflictError(HubError):
    """Raised when a DocumentId is re-used by its sender with other content."""

    code = "duplicate_conflict"
    http_status = 409


class NotFoundError(HubError):
    """Raised when the thing asked for does not exist (or is not yours)."""

    code = "not_found"
    http_status = 404


class AuthError(HubError):
    """Raised when a request carries no or a bad credential."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(AuthError):
    """Raised when a valid identity asks for something its role may not see."""

    code = "forbidden"
    http_status = 403


class SpoolError(HubError):
    """Raised when the spool cannot store or read; the caller may retry."""

    code = "spool_error"
    http_status = 503


class BackpressureError(SpoolError):
    """Raised when the spool is over quota or the disk is too full to accept."""

    code = "spool_full"
    http_status = 503


class PayloadCorruptError(HubError):
    """Raised when a payload file's bytes no longer hash to the SHA-256 they were stored
    under (a disk or an operator changed them): never served, never delivered."""

    code = "payload_corrupt"
    http_status = 500


class ConfigError(HubError):
    """Raised when a configuration file or directory entry is invalid."""

    code = "config_error"


class AdapterError(HubError):
    """Raised when a delivery adapter cannot deliver."""

    code = "adapter_error"
    http_status = 502


class TemporaryDeliveryError(AdapterError):
    """Raised when delivery failed for now and should be tried again later."""

    code = "delivery_deferred"


class PermanentDeliveryError(AdapterError):
    """Raised when the destination refused the document for good."""

    code = "delivery_refused"
