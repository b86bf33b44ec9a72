"""Prediction routes: one submit route per model in the catalog, result, list, delete, cancel."""

# no `from __future__ import annotations`: FastAPI reads each submit route's body type at runtime
import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from wanforge.api.deps import AppState, BaseUrlDep, KeyDep, StateDep, app_state, base_url, require_key
from wanforge.api.errors import ApiError, ErrorEnvelope, envelope, storage_error
from wanforge.api.guard import INVALID_KEY
from wanforge.api.inline_inputs import discard, store_inline_inputs
from wanforge.api.tenancy import check_own_files, limits_for, storage_quota_for, visible_to
from wanforge.api.wire import DeleteEnvelope, DeleteIn, ListEnvelope, ListIn, WebhookSecretEnvelope
from wanforge.catalog import MODELS, ULTRA_FAST_HINT, ModelSpec, get_model, served_models
from wanforge.logs import set_prediction
from wanforge.media.errors import Refused, StorageUnavailable
from wanforge.media.fetch import check_post_url
from wanforge.predictions import PredictionEnvelope, prediction_out
from wanforge.store import jobs, retention
from wanforge.store.db import Database, is_row_id
from wanforge.store.quotas import KeyRevoked, Limit, OverLimit
from wanforge.store.storage_quota import InlineUpload, OverStorage
from wanforge.store.tables import ApiKey, Prediction
from wanforge.vocabulary import TERMINAL, ErrorCode, Status
from wanforge.webhooks.secret import webhook_secret

router = APIRouter(prefix="/api/v3", tags=["predictions"])
log = logging.getLogger("wanforge.api")
# the ultra-fast models' submit routes: the app includes them only when the operator configured
# the distill LoRAs (`Settings.ultra_fast_configured`), so they are listed (OpenAPI) only then
ultra_fast_router = APIRouter(prefix="/api/v3", tags=["predictions"])


SYNC_POLL_S = 0.25  # how often a sync-mode request reads its prediction's status


class SyncWait(StrEnum):
    DONE = "done"
    TIMED_OUT = "timed_out"
    CLIENT_GONE = "client_gone"
    SHUTTING_DOWN = "shutting_down"


async def wait_until_done(request: Request, db: Database, prediction_id: str, timeout_s: float) -> SyncWait:
    """Poll the status column (never the whole row, whose input may hold a data: image) until the
    task ends, the client disconnects, the server begins to shut down, or `timeout_s` passes."""
    stopping: threading.Event = request.app.state.stopping
    deadline = time.monotonic() + timeout_s
    while True:
        if stopping.is_set():
            return SyncWait.SHUTTING_DOWN
        if await request.is_disconnected():
            return SyncWait.CLIENT_GONE
        status = await asyncio.to_thread(jobs.get_status, db, prediction_id)
        if status is None or status in TERMINAL:
            return SyncWait.DONE
        left = deadline - time.monotonic()
        if left <= 0:
            return SyncWait.TIMED_OUT
        await asyncio.sleep(min(SYNC_POLL_S, left))


def _create(
    state: AppState,
    spec: ModelSpec,
    key: ApiKey,
    base: str,
    stored_input: dict[str, Any],
    webhook: str | None,
    inline: list[InlineUpload],
) -> Prediction:
    """Queue the prediction, admitted under the key's limits and storage quota (the answers
    over them: docs/api.md#quotas)."""
    try:
        return jobs.create_prediction(
            state.db,
            model=spec.id,
            kind=spec.kind.value,
            input=stored_input,
            server_base=base,
            max_attempts=state.settings.max_attempts,
            api_key_id=key.id,
            webhook_url=webhook.strip() if webhook else None,
            limits=limits_for(key, state.settings),
            now=state.clock(),
            inline_uploads=inline,
            storage_quota=storage_quota_for(key, state.settings),
        )
    except KeyRevoked as exc:  # revoked since this process checked it (WANFORGE_KEY_CACHE_S)
        raise ApiError(401, INVALID_KEY, 401) from exc
    except OverStorage as exc:
        raise storage_error(exc) from exc
    except OverLimit as exc:
        full = exc.limit is Limit.QUEUE
        raise ApiError(
            HTTPStatus.SERVICE_UNAVAILABLE if full else HTTPStatus.TOO_MANY_REQUESTS,
            exc.message,
            ErrorCode.UNAVAILABLE if full else HTTPStatus.TOO_MANY_REQUESTS,
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from exc


def _make_submit(spec: ModelSpec) -> Callable[..., Awaitable[dict[str, Any]]]:
    input_model = spec.input_model

    async def submit(
        body: input_model,  # type: ignore[valid-type]
        request: Request,
        state: StateDep,
        key: KeyDep,
        base: BaseUrlDep,
        webhook: str | None = Query(
            default=None, description="URL to POST the prediction to (signed) when it finishes"
        ),
    ) -> dict[str, Any]:
        assert isinstance(body, BaseModel)
        model_input: BaseModel = body
        sync = bool(getattr(body, "enable_sync_mode", False))
        if webhook is not None:
            try:
                check_post_url(webhook, allow_private=state.settings.allow_private_urls)
            except Refused as exc:
                raise ApiError(400, f"invalid parameter webhook: {exc}", ErrorCode.INVALID_PARAMETER) from exc
        stored_input = model_input.model_dump(mode="json", exclude={"enable_sync_mode"})
        own_bases = [base, *state.settings.own_base_urls]
        await asyncio.to_thread(check_own_files, state.db, key, stored_input, own_bases)
        try:
            inline = await asyncio.to_thread(store_inline_inputs, stored_input, state.storage, base)
        except StorageUnavailable as exc:
            raise ApiError(
                503, "file storage is unavailable; try again later", ErrorCode.UNAVAILABLE
            ) from exc
        try:
            row = await asyncio.to_thread(_create, state, spec, key, base, stored_input, webhook, inline)
        except BaseException:
            await asyncio.to_thread(discard, inline, state.storage)  # nothing of a refused one is kept
            raise
        set_prediction(row.id)
        log.info("prediction created for model %s", spec.id)
        if sync:
            timeout_s = state.settings.sync_mode_timeout_s
            outcome = await wait_until_done(request, state.db, row.id, timeout_s)
            if outcome is SyncWait.CLIENT_GONE:  # nobody reads the answer: read nothing more
                return envelope(prediction_out(row, base).model_dump())
            latest = await asyncio.to_thread(jobs.get_prediction, state.db, row.id)
            data = prediction_out(latest or row, base)
            if outcome is SyncWait.DONE:
                return envelope(data.model_dump())
            data.error = (
                f"Sync mode timed out after {timeout_s:g}s"
                if outcome is SyncWait.TIMED_OUT
                else "Sync mode ended: the server is shutting down"
            ) + f"; the task is still running, query {data.urls.get}"
            # the SDK recognises a sync-mode timeout by data.code == 5004
            return envelope(
                {**data.model_dump(), "code": ErrorCode.TIMEOUT},
                code=ErrorCode.TIMEOUT,
                message="sync mode timed out",
            )
        position = await state.queue.get(row.id)
        return envelope(prediction_out(row, base, queue_position=position).model_dump())

    submit.__name__ = "submit_" + spec.id.replace("/", "_").replace("-", "_").replace(".", "_")
    submit.__doc__ = f"{spec.summary}. Body: {input_model.__name__}."
    return submit


def _get(state: StateDep, key: ApiKey, prediction_id: str, base: str, with_logs: bool) -> dict[str, Any]:
    set_prediction(prediction_id if is_row_id(prediction_id) else None)
    row = jobs.get_prediction(state.db, prediction_id, visible_to(key))
    if row is None:
        raise ApiError(404, f"prediction {prediction_id} not found")
    position = state.queue.position(row.id) if row.status == Status.CREATED else None
    return envelope(prediction_out(row, base, with_logs=with_logs, queue_position=position).model_dump())


@router.get("/predictions/{prediction_id}/result", response_model=PredictionEnvelope)
async def get_result(prediction_id: str, request: Request) -> Response:
    """The prediction's current state; outputs once completed."""
    # the hot path (the SDKs poll it every second): the dependencies called directly (FastAPI's
    # solving of them costs more than they do), one read of the columns shown, batched with
    # the polls in flight (`PollReader`), and pydantic's serializer straight to bytes (the answer is built from the
    # model, so FastAPI's re-validation of it is skipped); docs/performance.md
    state, key, base = app_state(request), await require_key(request), await base_url(request)
    row = await state.polls.get(prediction_id, visible_to(key))
    if row is None:
        raise ApiError(404, f"prediction {prediction_id} not found")
    # a queued one's place: a look-up in the queue snapshot the polls share (store/fairness.py)
    position = await state.queue.get(row.id) if row.status == Status.CREATED else None
    answer = PredictionEnvelope(data=prediction_out(row, base, queue_position=position))
    return Response(answer.model_dump_json(), media_type="application/json")


@router.get("/predictions/{prediction_id}", response_model=PredictionEnvelope)
def get_prediction(prediction_id: str, state: StateDep, key: KeyDep, base: BaseUrlDep) -> dict[str, Any]:
    """The prediction with its job log."""
    return _get(state, key, prediction_id, base, with_logs=True)


@router.post("/predictions", response_model=None, responses={200: {"model": ListEnvelope}})
def list_predictions(body: ListIn, state: StateDep, key: KeyDep, base: BaseUrlDep) -> dict[str, Any]:
    """The key's predictions (an admin key's: all), newest first, filtered by model, status and
    creation time. Only those within the retention window are listed: not yet ended, or ended
    less than WANFORGE_RETENTION_DAYS ago (and not swept)."""
    window = state.settings.retention_s
    page = jobs.list_predictions(
        state.db,
        visible_to=visible_to(key),
        retained_since=retention.cutoff(state.clock(), window) if window is not None else None,
        page=body.page,
        page_size=body.page_size,
        model=body.model,
        status=body.status,
        created_after=body.created_after,
        created_before=body.created_before,
    )
    return envelope(
        {
            "items": [
                prediction_out(
                    r, base, queue_position=state.queue.position(r.id) if r.status == Status.CREATED else None
                ).model_dump()
                for r in page.items
            ],
            "page": body.page,
            "page_size": body.page_size,
            "total": page.total,
        }
    )


@router.post("/predictions/delete", response_model=None, responses={200: {"model": DeleteEnvelope}})
def delete_predictions(body: DeleteIn, state: StateDep, key: KeyDep) -> dict[str, Any]:
    """Delete finished (and queued) predictions with their output files; running ones are asked
    to stop. Answers `{deleted, cancelling, not_found}`: each id in exactly one list; another
    key's predictions are `not_found`."""
    ids = list(dict.fromkeys(body.ids))
    scope = visible_to(key)
    not_found = [i for i in ids if jobs.request_cancel(state.db, i, scope) is None]
    deleted = jobs.delete_predictions(state.db, ids, scope)
    for storage_keys in deleted.values():
        for storage_key in storage_keys:
            state.storage.delete(storage_key)
    return envelope(
        {
            "deleted": [i for i in ids if i in deleted],
            "cancelling": [i for i in ids if i not in deleted and i not in not_found],
            "not_found": not_found,
        }
    )


@router.delete("/predictions/{prediction_id}", response_model=PredictionEnvelope)
def cancel_prediction(prediction_id: str, state: StateDep, key: KeyDep, base: BaseUrlDep) -> dict[str, Any]:
    """Cancel a prediction: at once if queued, between steps if running."""
    set_prediction(prediction_id if is_row_id(prediction_id) else None)
    row = jobs.request_cancel(state.db, prediction_id, visible_to(key))
    if row is None:
        raise ApiError(404, f"prediction {prediction_id} not found")
    return envelope(prediction_out(row, base).model_dump())


@router.get(
    "/webhook/secret",
    tags=["webhooks"],
    response_model=None,
    responses={200: {"model": WebhookSecretEnvelope}},
)
def get_webhook_secret(state: StateDep, key: KeyDep) -> dict[str, Any]:
    """The secret the webhooks of this key's predictions are signed with (`whsec_...`); each key
    has its own."""
    return envelope({"secret": webhook_secret(state.db, key.id)})


# after the GET routes: a poll (most requests) is matched without trying every submit route
for _spec in MODELS.values():
    (ultra_fast_router if _spec.sampling == "ultra_fast" else router).add_api_route(
        f"/{_spec.id}",
        _make_submit(_spec),
        methods=["POST"],
        # documented, not enforced: a sync-mode timeout adds `data.code` (5004) for the SDK
        response_model=None,
        responses={
            200: {"model": PredictionEnvelope},
            429: {"model": ErrorEnvelope, "description": "Over the key's rate, concurrency or queue limit"},
            503: {"model": ErrorEnvelope, "description": "The server's queue is full (5003)"},
        },
        summary=f"Submit: {_spec.summary}",
        name=_spec.id,
    )


@router.post("/{model_id:path}", include_in_schema=False)
def unknown_model(model_id: str, request: Request, state: StateDep, _key: KeyDep) -> None:
    if get_model(model_id) is not None:  # a catalog model whose route this app did not include
        raise ApiError(404, f"model '{model_id.strip('/')}' {ULTRA_FAST_HINT} (see docs/api.md)")
    offered = ", ".join(served_models(state.settings))
    raise ApiError(404, f"unknown model '{model_id}'; this server offers: {offered}")
