"""The API's refusals: one exception per HTTP status, raised by the manager, turned into HTTP by the handlers.

::

    ApiError                 (status)
    ├── BadRequest           400  malformed JSON, a missing/wrong/unknown field, a limit above the maximum
    ├── PaymentRequired      402  a budget refuses
    ├── NotFound             404  an unknown id, or another user's
    ├── Conflict             409  no capacity (no free GPU, too many sandboxes)
    └── PayloadTooLarge      413  a body over the limit

The manager knows nothing of tornado; ``handlers/base.py`` is the one place that maps these (and
burstlab's own errors) to responses.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    reason = "Internal Server Error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status, reason = 400, "Bad Request"


class PaymentRequired(ApiError):
    status, reason = 402, "Payment Required"


class NotFound(ApiError):
    status, reason = 404, "Not Found"


class Conflict(ApiError):
    status, reason = 409, "Conflict"


class PayloadTooLarge(ApiError):
    status, reason = 413, "Payload Too Large"


__all__ = ["ApiError", "BadRequest", "Conflict", "NotFound", "PayloadTooLarge", "PaymentRequired"]
