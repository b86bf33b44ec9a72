"""Wire types of the API's requests and of upload answers.

The prediction object lives in `wanforge.predictions`: the webhook sender sends it too.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class UploadOut(BaseModel):
    type: str = "file"
    download_url: str
    filename: str
    size: int
    content_type: str


class UploadTicketIn(BaseModel):
    filename: str = Field(min_length=1, max_length=300)
    size: int | None = Field(default=None, ge=0)
    content_type: str | None = None


class ListIn(BaseModel):
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=20, ge=1, le=100)
    model: str | None = None
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class DeleteIn(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=1000)
