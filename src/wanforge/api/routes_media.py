"""Uploads in both forms the SDKs use, and the artifact files themselves.

- `POST /api/v3/media/upload/binary` (multipart `file`) answers `data.download_url`.
- `POST /api/v3/media/uploads` answers a PUT ticket plus `data.download_url`; the PUT carries a
  one-time token in its URL (like a presigned URL), because the SDK sends it without the API key.
- `GET /files/{key}` serves uploads and outputs under unguessable keys.
"""

from __future__ import annotations

import asyncio
import mimetypes
import secrets
from collections.abc import AsyncIterator
from typing import Any, NoReturn

from fastapi import APIRouter, File, Header, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response

from wanforge.api.deps import AppState, BaseUrlDep, KeyDep, StateDep
from wanforge.api.errors import ApiError, ErrorEnvelope, envelope, storage_error
from wanforge.api.tenancy import storage_quota_for
from wanforge.api.wire import (
    UploadDoneEnvelope,
    UploadEnvelope,
    UploadOut,
    UploadTicketEnvelope,
    UploadTicketIn,
)
from wanforge.media.errors import MediaError, StorageUnavailable, TooLarge
from wanforge.media.keys import is_scratch_key
from wanforge.predictions import file_url, iso
from wanforge.store import retention, uploads
from wanforge.store.keys import get_key
from wanforge.store.storage_quota import OverStorage, check_room, over_room, room_left
from wanforge.store.tables import ApiKey, Upload
from wanforge.vocabulary import ErrorCode

router = APIRouter(tags=["media"])

CHUNK = 1024 * 1024


def _content_type(filename: str, given: str | None) -> str:
    return given or mimetypes.guess_type(filename)[0] or "application/octet-stream"


async def _chunks_of(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(CHUNK):
        yield chunk


@router.post("/api/v3/media/upload/binary", response_model=None, responses={200: {"model": UploadEnvelope}})
async def upload_binary(
    request: Request, state: StateDep, key: KeyDep, base: BaseUrlDep, file: UploadFile = File(...)
) -> dict[str, Any]:
    """Upload one file as multipart/form-data (field `file`)."""
    if (parts := len((await request.form()).getlist("file"))) > 1:  # the form FastAPI already read
        raise ApiError(
            400, f"invalid parameter file: one file per upload, got {parts}", ErrorCode.INVALID_PARAMETER
        )
    filename = file.filename or "upload"
    storage_key = state.storage.new_key("uploads", filename)
    room = await _room(state, key)
    limit = state.settings.max_upload_bytes
    try:
        size = await state.storage.write_async_stream(
            storage_key, _chunks_of(file), max_bytes=limit if room is None else min(limit, room)
        )
    except TooLarge as exc:
        if room is not None and room < limit:
            raise storage_error(over_room("this upload", room, _quota(state, key))) from exc
        raise ApiError(413, str(exc), ErrorCode.INVALID_PARAMETER) from exc
    except StorageUnavailable as exc:
        raise _unavailable() from exc
    except MediaError as exc:
        raise ApiError(400, str(exc), ErrorCode.INVALID_PARAMETER) from exc
    content_type = _content_type(filename, file.content_type)
    row = await asyncio.to_thread(
        uploads.create_upload,
        state.db,
        key=storage_key,
        filename=filename,
        content_type=content_type,
        declared_size=size,
        put_token=None,
        api_key_id=key.id,
    )
    await asyncio.to_thread(uploads.mark_complete, state.db, row.id, size)
    out = UploadOut(
        download_url=file_url(base, storage_key), filename=filename, size=size, content_type=content_type
    )
    return envelope(out.model_dump())


@router.post("/api/v3/media/uploads", response_model=None, responses={200: {"model": UploadTicketEnvelope}})
def create_upload_ticket(
    body: UploadTicketIn, state: StateDep, key: KeyDep, base: BaseUrlDep
) -> dict[str, Any]:
    """Start an upload: answers where to PUT the bytes and the URL they will have."""
    if body.size is not None and body.size > state.settings.max_upload_bytes:
        raise ApiError(
            413,
            f"invalid parameter size: {body.size} bytes is over the upload limit of "
            f"{state.settings.max_upload_bytes} bytes",
            ErrorCode.INVALID_PARAMETER,
        )
    try:  # a declared size is held for the ticket from now on; an undeclared one is checked at the PUT
        with state.db.session() as s:
            check_room(s, key.id, quota=_quota(state, key), adding=body.size or 0, what="this upload")
    except OverStorage as exc:
        raise storage_error(exc) from exc
    content_type = _content_type(body.filename, body.content_type)
    storage_key = state.storage.new_key("uploads", body.filename)
    token = secrets.token_urlsafe(32)
    row = uploads.create_upload(
        state.db,
        key=storage_key,
        filename=body.filename,
        content_type=content_type,
        declared_size=body.size,
        put_token=token,
        api_key_id=key.id,
    )
    return envelope(
        {
            "id": row.id,
            "upload": {
                "method": "PUT",
                "url": f"{base}/api/v3/media/uploads/{row.id}?token={token}",
                "headers": {"Content-Type": content_type},
            },
            "download_url": file_url(base, storage_key),
            "filename": body.filename,
        }
    )


@router.put(
    "/api/v3/media/uploads/{upload_id}", response_model=None, responses={200: {"model": UploadDoneEnvelope}}
)
async def put_upload(upload_id: str, token: str, request: Request, state: StateDep) -> dict[str, Any]:
    """Receive the bytes of a ticketed upload (authorised by the ticket's one-time token)."""
    row = await asyncio.to_thread(uploads.get_upload, state.db, upload_id)
    if row is None or not uploads.token_matches(row, token):
        raise ApiError(404, "upload ticket not found, already used, or wrong token")
    if not await asyncio.to_thread(uploads.claim, state.db, upload_id, token):
        raise ApiError(409, "upload ticket is already being used by another PUT")
    try:
        size = await _receive_ticketed(row, request, state)
    except BaseException:
        await asyncio.to_thread(uploads.release, state.db, row.id)
        raise
    await asyncio.to_thread(uploads.mark_complete, state.db, row.id, size)
    return envelope({"id": row.id, "size": size})


async def _receive_ticketed(row: Upload, request: Request, state: AppState) -> int:
    limit = state.settings.max_upload_bytes
    why = "WANFORGE_MAX_UPLOAD_BYTES sets the limit"
    room = quota = None
    if row.declared_size is not None and row.declared_size <= limit:
        limit, why = row.declared_size, "the size declared when the upload was created"
    elif row.api_key_id is not None:  # no size held for it: what the key's quota has left
        key = await asyncio.to_thread(get_key, state.db, row.api_key_id)
        if key is not None:
            quota = storage_quota_for(key, state.settings)
            room = await _room(state, key)
    try:
        size = await state.storage.write_async_stream(
            row.key, request.stream(), max_bytes=limit if room is None else min(limit, room)
        )
    except TooLarge as exc:
        if room is not None and quota is not None and room < limit:
            raise storage_error(over_room("this upload", room, quota)) from exc
        raise ApiError(413, f"{exc} ({why})", ErrorCode.INVALID_PARAMETER) from exc
    except StorageUnavailable as exc:
        raise _unavailable() from exc
    if row.declared_size is not None and size != row.declared_size:
        await asyncio.to_thread(state.storage.delete, row.key)
        raise ApiError(
            400,
            f"upload is {size} bytes but the ticket declared {row.declared_size}; nothing was kept",
            ErrorCode.INVALID_PARAMETER,
        )
    return size


def _quota(state: AppState, key: ApiKey) -> int:
    return storage_quota_for(key, state.settings)


async def _room(state: AppState, key: ApiKey) -> int | None:
    """The bytes `key` may still store (None: unlimited); 429 when it may store none."""
    try:
        return await asyncio.to_thread(room_left, state.db, key.id, _quota(state, key))
    except OverStorage as exc:
        raise storage_error(exc) from exc


# served inline: media a browser shows as such; anything else is a download, with no sniffing
INLINE_TYPES = ("image/", "video/")
# types a browser would run or render as a page: never served under their own type
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
        "text/css",
    }
)


def served_type(filename: str) -> tuple[str, str]:
    """(Content-Type, disposition type) for a stored file, from its name (never a claimed type)."""
    guessed = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if guessed in ACTIVE_TYPES:
        return "application/octet-stream", "attachment"
    return guessed, "inline" if guessed.startswith(INLINE_TYPES) else "attachment"


def usable_range(spec: str, size: int) -> str | None:
    """The satisfiable part of a `Range` header, as RFC 9110 reads one: None when the header is to
    be ignored (another unit, or not a valid byte-range set: the whole file is served, 200); an
    ApiError 416 with `Content-Range: bytes */size` when no range in it can be served."""
    units, _, ranges_spec = spec.partition("=")
    if units.strip().lower() != "bytes" or not ranges_spec.strip():
        return None
    # Starlette's own parser, so what is kept agrees with what FileResponse then serves
    ranges = FileResponse._parse_ranges(ranges_spec, size)
    if not ranges or any(start >= end and start < size for start, end in ranges):
        return None
    served = [(start, end) for start, end in ranges if 0 <= start < size]
    if not served:
        raise ApiError(
            416,
            f"Range header not satisfiable: the file has {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return "bytes=" + ",".join(f"{start}-{end - 1}" for start, end in served)


_FILE_BYTES = {"schema": {"type": "string", "format": "binary"}}
# what mimetypes guesses from the file's name (see `served_type`): any type at all
FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file", "content": {"*/*": _FILE_BYTES}},
    206: {"description": "The ranges asked for (`Range: bytes=...`)", "content": {"*/*": _FILE_BYTES}},
    404: {"model": ErrorEnvelope, "description": "No file under this key"},
    302: {"description": "Object storage: the file is at the presigned URL in `Location`"},
    410: {"model": ErrorEnvelope, "description": "An output deleted by the retention sweep"},
    503: {"model": ErrorEnvelope, "description": "The file storage is unavailable (5003)"},
    416: {"model": ErrorEnvelope, "description": "No range of `Range` lies within the file"},
}


@router.head("/files/{key:path}", include_in_schema=False)  # the headers of the GET, no body
@router.get("/files/{key:path}", tags=["files"], response_class=FileResponse, responses=FILE_RESPONSES)
def get_file(
    key: str,
    request: Request,
    state: StateDep,
    _range: str | None = Header(  # documented here; read from the request's headers below
        default=None, alias="range", description="`bytes=start-end[,...]`: parts of the file (206)"
    ),
) -> Response:
    """An upload or an output. Keys are unguessable; whoever has the URL can read the file.

    With object storage (`WANFORGE_STORAGE_URL=s3://...`) the answer is a 302 to a presigned URL
    valid `WANFORGE_S3_PRESIGN_S` seconds; the store then serves the bytes (and ranges) itself.

    An output deleted by the retention sweep answers 410 (an expired upload, whose record is
    deleted with it, answers 404, as an unknown key does).

    Images and videos are served inline, anything else as an attachment; HTML, SVG and scripts
    as `application/octet-stream`; always with `X-Content-Type-Options: nosniff`."""
    if is_scratch_key(key):  # a job's scratch (training checkpoints) is the workers' own
        raise ApiError(404, "file not found")
    try:
        name = key.rsplit("/", 1)[-1]
        media_type, disposition = served_type(name)
        url = state.storage.presigned_url(
            key,
            state.settings.s3_presign_s,
            content_type=media_type,
            content_disposition=f'{disposition}; filename="{name}"',
        )
        if url is not None:  # object storage: the client fetches the bytes from it directly
            if not state.storage.exists(key):
                _missing(state, key)
            return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
        path = state.storage.path(key)
    except StorageUnavailable as exc:
        raise _unavailable() from exc
    except MediaError as exc:
        raise ApiError(404, "file not found") from exc
    if not path.is_file():
        _missing(state, key)
    size = path.stat().st_size
    if (spec := request.headers.get("range")) is not None:
        usable = usable_range(spec, size)
        # what FileResponse then serves comes from the request's headers: give it the usable part
        headers = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"range"]
        if usable is not None:
            headers.append((b"range", usable.encode("latin-1")))
        request.scope["headers"] = headers
    return FileResponse(
        path,
        media_type=media_type,
        filename=path.name,
        content_disposition_type=disposition,
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _missing(state: AppState, key: str) -> NoReturn:
    """404 for a key never stored (or an expired upload), 410 for an output the sweep deleted."""
    if (expired := retention.output_expired_at(state.db, key)) is not None:
        raise ApiError(
            410,
            f"file expired: outputs are deleted {state.settings.retention_days:g} days after their "
            f"prediction ended (WANFORGE_RETENTION_DAYS); this one was deleted at {iso(expired)}",
        )
    raise ApiError(404, "file not found")


def _unavailable() -> ApiError:
    """503/5003 when the file storage itself fails (an object store down): worth trying again."""
    return ApiError(503, "file storage is unavailable; try again later", ErrorCode.UNAVAILABLE)
