"""Wire types of the API's requests and of upload answers.

The prediction object lives in `wanforge.predictions`: the webhook sender sends it too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from wanforge import predictions  # the module, not its names: the wire form lives there alone
from wanforge.catalog import WireInput
from wanforge.vocabulary import Status


class UploadOut(BaseModel):
    type: str = "file"
    download_url: str
    filename: str
    size: int
    content_type: str


class UploadTicketIn(WireInput):
    filename: str = Field(min_length=1, max_length=300)
    size: int | None = Field(default=None, ge=0)
    content_type: str | None = Field(default=None, max_length=200)


MAX_PAGE = 100_000  # with page_size <= 100: an offset of at most 10 million rows


class ListIn(WireInput):
    page: int = Field(default=1, ge=1, le=MAX_PAGE)
    page_size: int = Field(default=20, ge=1, le=100)
    model: str | None = Field(default=None, max_length=200)
    status: Status | None = None
    created_after: datetime | None = Field(default=None, description="naive times are taken as UTC")
    created_before: datetime | None = Field(default=None, description="naive times are taken as UTC")

    @field_validator("created_after", "created_before")
    @classmethod
    def _naive_utc(cls, ts: datetime | None) -> datetime | None:
        """The store keeps naive UTC: an aware time is converted, a naive one is taken as UTC."""
        if ts is None or ts.tzinfo is None:
            return ts
        try:
            return ts.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError("out of range once converted to UTC") from None


class DeleteIn(WireInput):
    ids: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=1000)


# Answers, as the OpenAPI document declares them (the routes' response models)


class UploadEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: UploadOut


class UploadPut(BaseModel):
    method: Literal["PUT"] = "PUT"
    url: str = Field(description="where to PUT the bytes; carries a one-time token")
    headers: dict[str, str] = Field(description="headers to send with the PUT")


class UploadTicketOut(BaseModel):
    id: str
    upload: UploadPut
    download_url: str = Field(description="the file's URL once the PUT is done")
    filename: str


class UploadTicketEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: UploadTicketOut


class UploadDoneOut(BaseModel):
    id: str
    size: int = Field(description="bytes received")


class UploadDoneEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: UploadDoneOut


class ListOut(BaseModel):
    items: list[predictions.PredictionOut]
    page: int
    page_size: int
    total: int = Field(description="predictions matching the filters, on all pages")


class ListEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: ListOut


class DeleteOut(BaseModel):
    deleted: list[str] = Field(description="deleted, with their output files")
    cancelling: list[str] = Field(description="running: asked to stop")
    not_found: list[str] = Field(description="unknown, or another key's")


class DeleteEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: DeleteOut


class WebhookSecretOut(BaseModel):
    secret: str = Field(description="`whsec_...`")


class WebhookSecretEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: WebhookSecretOut
