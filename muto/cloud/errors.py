"""Application errors, each mapped to one HTTP status by the API."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 500
    code = "internal"
    headers: dict[str, str] | None = None  # sent with the error (Retry-After, ...)

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    """Another write won (optimistic concurrency), or the request contradicts stored
    history (a release re-registered with another digest)."""

    status = 409
    code = "conflict"


class Invalid(AppError):
    status = 422
    code = "invalid"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
