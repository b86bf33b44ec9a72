"""The one place a :class:`~wanforge.media.storage.Storage` is made from the settings (the API
app, the workers and the CLI all call :func:`make_storage`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wanforge.media.storage import LocalStorage, Storage

if TYPE_CHECKING:
    from wanforge.config import Settings

__all__ = ["make_storage"]


def make_storage(settings: Settings) -> Storage:
    """``WANFORGE_STORAGE_URL`` unset: the local directory ``data_dir/files``; ``s3://bucket/prefix``:
    :class:`~wanforge.media.storage_s3.S3Storage` (boto3 is imported only then)."""
    if settings.storage_url is None:
        return LocalStorage(settings.storage_dir)
    try:
        from wanforge.media.storage_s3 import S3Storage

        return S3Storage.from_url(
            settings.storage_url, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
    except ImportError as exc:
        raise RuntimeError(
            "WANFORGE_STORAGE_URL is an s3:// URL but boto3 is not installed: pip install 'wanforge[s3]'"
        ) from exc
