"""Errors of ``hub.vxp.client``: every failure is temporary or permanent.

The tree hangs under ``hub.errors``' delivery errors, so an adapter that lets
them propagate gets the right verdict (defer or refuse) for free::

    VxpError (AdapterError)
      VxpTemporaryError (TemporaryDeliveryError)   try again later
        VxpTimeoutError        no answer within the client's timeout
        VxpConnectionError     could not connect, or the connection broke
        VxpServerError         HTTP 5xx, 408 or 429
        VxpBadResponseError    a 2xx body that is not the JSON the SDK parses
        VxpRetryableFail       status FAIL with an ErrorCode in retryable_codes
      VxpPermanentError (PermanentDeliveryError)   do not repeat as is
        VxpRefusedError        status FAIL with any other ErrorCode
        VxpAuthRejectedError   401 again after a fresh token, 401 without
                               OAuth2, or the token endpoint refused the credentials
        VxpHttpError           any other 4xx whose body is not a FAIL answer
                               (a 403 FAIL answer is a VxpRefusedError with its code)

``details`` carries ``operation`` and, for answers, ``http_status`` and the
platform's ``error_code`` (its ``ErrorCode``; strings, the platform's own).
"""
from __future__ import annotations

from hub.errors import AdapterError, PermanentDeliveryError, TemporaryDeliveryError


class VxpError(AdapterError):
    """Raised when a call to a VXP platform fails; base of the client's errors."""

    code = "vxp_error"
    #: Whether the same call may succeed later.
    temporary = False

    @property
    def operation(self) -> str | None:
        value = self.details.get("operation")
        return value if isinstance(value, str) else None

    @property
    def error_code(self) -> str | None:
        """The platform's ``ErrorCode`` when it answered one."""
        value = self.details.get("error_code")
        return value if isinstance(value, str) else None


class VxpTemporaryError(VxpError, TemporaryDeliveryError):
    """Raised when a call failed for now and may be tried again later."""

    code = "vxp_temporary"
    temporary = True


class VxpPermanentError(VxpError, PermanentDeliveryError):
    """Raised when the platform refused a call for good."""

    code = "vxp_permanent"


class VxpTimeoutError(VxpTemporaryError):
    """Raised when the platform did not answer within the timeout."""

    code = "vxp_timeout"


class VxpConnectionError(VxpTemporaryError):
    """Raised when the platform could not be reached or dropped the connection."""

    code = "vxp_connection"


class VxpServerError(VxpTemporaryError):
    """Raised when the platform answered HTTP 5xx, 408 or 429."""

    code = "vxp_server_error"


class VxpBadResponseError(VxpTemporaryError):
    """Raised when a success-status body is not a JSON answer with the SDK's fields."""

    code = "vxp_bad_response"


class VxpRetryableFail(VxpTemporaryError):
    """Raised when the platform answered FAIL with an ErrorCode known to be transient."""

    code = "vxp_fail_retryable"


class VxpRefusedError(VxpPermanentError):
    """Raised when the platform answered FAIL with an ErrorCode not known to be transient."""

    code = "vxp_refused"


class VxpAuthRejectedError(VxpPermanentError):
    """Raised when credentials are refused even after getting a fresh token."""

    code = "vxp_auth_rejected"


class VxpHttpError(VxpPermanentError):
    """Raised when the platform answered a 4xx that is not a FAIL answer."""

    code = "vxp_http_error"
