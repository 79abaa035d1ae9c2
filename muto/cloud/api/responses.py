"""The response envelope `{data, metadata, timestamp}` and `{error: {code, message,
details}}` (spec/api.yaml), and how each failure maps to a status."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy.exc
from eventsourcing.persistence import PersistenceError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from muto.cloud.api.numbers import whole_number
from muto.cloud.errors import AppError, database_refusal, first_line
from muto.domain.errors import ReasonError
from muto.domain.model.rollout import RolloutStateError
from muto.domain.selectors import SelectorError
from muto.domain.wire import WireError

logger = logging.getLogger("muto.api")
JSON = "application/json"


_second: tuple[int, str] = (0, "")  # the current second, formatted once


def _now() -> str:
    """The envelope's timestamp, RFC 3339 in UTC with microseconds. Formatting a
    datetime per answer was ~4 % of a health report's CPU; the second's text changes
    once a second."""
    global _second
    ns = time.time_ns()
    whole, us = divmod(ns // 1000, 1_000_000)
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{us:06d}Z"


def ok(
    data: Any,
    status: int = 200,
    metadata: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = msgspec.json.encode({"data": data, "metadata": metadata or {}, "timestamp": _now()})
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def error(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    body = msgspec.json.encode({"error": {"code": code, "message": message, "details": details}})
    return Response(body, status_code=status, media_type=JSON, headers=headers)


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class Unauthorized(Exception):
    """No or unknown bearer token."""


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    digits = declared is not None and declared.isascii() and declared.isdigit()
    if digits and whole_number(declared or "", 0, limit) is None:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _limit(limit: int | None) -> dict[str, int]:
    return {} if limit is None else {"limit": limit}


STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}


async def on_error(request: Request, exc: Exception) -> Response:
    """Bad input never becomes a 500: every expected failure has a status and a code."""
    match exc:
        case AppError():
            return error(exc.status, exc.code, exc.message, exc.details, exc.headers)
        case RolloutStateError():
            return error(409, exc.code, str(exc))
        case ReasonError():
            return error(422, str(exc.code), exc.detail or str(exc.code))
        case WireError() if exc.path is None:
            return error(400, "malformed_json", exc.message)
        case WireError():
            return error(422, "invalid", exc.message, {"path": exc.path})
        case SelectorError():
            details = {"position": exc.position}
            return error(400, "bad_selector", str(exc), details | _limit(exc.limit))
        case BodyTooLarge():
            return error(413, "too_large", str(exc), {"limit": exc.limit})
        case Unauthorized():
            return error(
                401,
                "unauthorized",
                str(exc) or "a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        case HTTPException():  # Starlette's own: unknown path (404), method (405)
            code = STARLETTE_CODES.get(exc.status_code, "http_error")
            headers = dict(exc.headers) if exc.headers else None
            return error(exc.status_code, code, exc.detail, headers=headers)
        case TimeoutError():
            return error(503, "unavailable", str(exc) or "the views did not catch up in time")
        case ClientDisconnect():  # a vehicle killed mid-request: nobody to answer, no bug
            return error(400, "malformed_json", "the client went away before its whole body")
    if (why := database_refusal(exc)) is not None:
        return _refused(request, exc, why)
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error(500, "internal", "internal error")


def _refused(request: Request, exc: Exception, why: str) -> Response:
    """The database cannot be used now (read-only after a failover, a full disk, a lost
    connection): nothing was stored; the caller retries (agents and the CLI do), and it
    works again once it can. One warning line: the condition is the database's, not a
    bug here."""
    said = "read" if request.method in ("GET", "HEAD") else "write"
    path = request.url.path
    logger.warning("the store refused a %s on %s: %s (%s)", said, path, why, first_line(exc))
    return error(503, "unavailable", f"the store cannot {said} now: {why}; retry later")


# Expected failures, handled by Starlette's ExceptionMiddleware (no re-raise); anything
# else reaches the `Exception` handler as a logged 500.
EXPECTED: tuple[type[Exception], ...] = (
    AppError,
    RolloutStateError,
    ReasonError,
    WireError,
    SelectorError,
    BodyTooLarge,
    Unauthorized,
    TimeoutError,
    HTTPException,
    ClientDisconnect,
    # The database's errors, whichever wrapper carries them: a refusal (read-only, disk
    # full) is a 503 and no traceback; anything else is still logged and answered 500.
    sqlalchemy.exc.DBAPIError,
    PersistenceError,
)


def exception_handlers() -> dict[Any, Any]:
    handlers: dict[Any, Any] = dict.fromkeys(EXPECTED, on_error)
    handlers[Exception] = on_error
    return handlers
