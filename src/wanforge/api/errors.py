"""API errors and the WaveSpeed envelope: every answer is `{code, message, data}`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from wanforge.store.db import STORE_UNAVAILABLE_ERRORS
from wanforge.store.storage_quota import OverStorage
from wanforge.vocabulary import ErrorCode

# what a client is told while the job store is unreachable (a PostgreSQL restart or failover):
# worth trying again, as the SDK's and any HTTP client's retry logic does for a 503
STORE_RETRY_AFTER_S = 2
STORE_UNAVAILABLE_MESSAGE = "the job store is unavailable; try again shortly"


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, code: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code if code is not None else status
        self.message = message
        self.headers = headers


class ErrorEnvelope(BaseModel):
    """What every error answers (the WaveSpeed envelope with no data)."""

    code: int = Field(description="the HTTP status, or a WaveSpeed code: 1400 missing, 1401 invalid")
    message: str = Field(description="what went wrong, naming the parameter or the body")
    data: None = None


# OpenAPI: the envelope instead of FastAPI's 422 HTTPValidationError, which is never sent
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "Missing (1400) or invalid (1401) input"},
    "4XX": {"model": ErrorEnvelope, "description": "Any other client error, in the same envelope"},
}


def envelope(data: Any, *, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def error_response(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content=envelope(None, code=code, message=message), headers=headers
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    """`("body", "loras", 0, "scale")` -> `loras[0].scale`: list positions as indices."""
    name = ""
    for part in loc:
        if part == "body" and not name:
            continue
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def _too_many(error: dict[str, Any], field: str) -> tuple[str, str] | None:
    """A list over its maximum length names its first entry over the limit: `loras[3]`."""
    ctx = error.get("ctx") or {}
    limit = ctx.get("max_length")
    if error.get("type") != "too_long" or not isinstance(error.get("input"), list) or limit is None:
        return None
    return f"{field}[{limit}]", f"at most {limit} entries are allowed, got {len(error['input'])}"


def validation_message(errors: list[dict[str, Any]]) -> tuple[int, str]:
    """Turn pydantic errors into (1400 | 1401, message naming the field)."""
    missing = [_field_name(tuple(e["loc"])) for e in errors if e.get("type") == "missing"]
    if missing:
        if missing == ["body"]:
            return (
                ErrorCode.MISSING_PARAMETER,
                "missing request body: send a JSON object of the model's inputs",
            )
        extra = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        return ErrorCode.MISSING_PARAMETER, f"missing required parameter: {missing[0]}{extra}"
    first = errors[0]
    field = _field_name(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return ErrorCode.INVALID_PARAMETER, "request body is not valid JSON"
    if field == "body":
        return ErrorCode.INVALID_PARAMETER, f"invalid request body: {first.get('msg', 'invalid')}"
    detail = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if (too_many := _too_many(first, field)) is not None:
        field, detail = too_many
    return ErrorCode.INVALID_PARAMETER, f"invalid parameter {field}: {detail}"


def _unreadable_body(exc: StarletteHTTPException) -> str:
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return "request body is not valid UTF-8: send the JSON encoded as UTF-8"
    if isinstance(cause, RecursionError):
        return "request body is nested too deeply to be read as JSON"
    return f"request body could not be read: {exc.detail}"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = exc.headers
        if exc.status == 413:  # hang up: the rest of an over-long body is not read (see guard.CLOSE)
            headers = {**(headers or {}), "Connection": "close"}
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        code, message = validation_message(list(exc.errors()))
        return error_response(400, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body (not a JSONDecodeError)
            return error_response(400, ErrorCode.INVALID_PARAMETER, _unreadable_body(exc), exc.headers)
        return error_response(exc.status_code, exc.status_code, str(exc.detail), exc.headers)

    async def _store_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(
            503,
            ErrorCode.UNAVAILABLE,
            STORE_UNAVAILABLE_MESSAGE,
            {"Retry-After": str(STORE_RETRY_AFTER_S)},
        )

    for error in STORE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _store_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")


def storage_error(exc: OverStorage) -> ApiError:
    """A write over the key's storage quota: 413/1401 (this one does not fit; the request as sent
    can never succeed) or 429/429 (the key is full: it may after deleting)."""
    return ApiError(exc.status, exc.message, ErrorCode.INVALID_PARAMETER if exc.status == 413 else 429)
