"""The domain error tree. The gateway maps it to HTTP in one table; workflows map it to
Temporal ``ApplicationError`` in one place.

    DomainError
    ├── NotFound              the object does not exist or is not visible to the caller (404)
    ├── Conflict              the request clashes with current state (409)
    ├── PermissionDenied      authenticated, but the role lacks the permission (403)
    ├── Unauthenticated       no valid credential (401)
    ├── InvalidInput          the request is malformed or violates a rule (422)
    ├── QuotaExceeded         a plan cap or policy limit (402/429 by kind)
    ├── RateLimited           too many attempts (429)
    └── UpstreamUnavailable   a dependency (database, Temporal, Stripe) is down (503)

Messages are written for the person reading them: they say what to do, and never carry secrets.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "DomainError",
    "InvalidInput",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "Unauthenticated",
    "UpstreamUnavailable",
]


class DomainError(Exception):
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class PermissionDenied(DomainError):
    code = "permission_denied"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class InvalidInput(DomainError):
    code = "invalid_input"

    def __init__(self, message: str, *, field_errors: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.field_errors = field_errors or {}


class QuotaExceeded(DomainError):
    code = "quota_exceeded"


class RateLimited(DomainError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 60, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class UpstreamUnavailable(DomainError):
    code = "upstream_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after
