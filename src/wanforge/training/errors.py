"""Errors of the training data path; each message is safe to show to the user."""

from __future__ import annotations

from wanforge.vocabulary import ErrorCode


class TrainingDataError(Exception):
    """Training data was refused or unusable; the message says why (task error code 1401)."""

    code = ErrorCode.INVALID_PARAMETER

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ArchiveError(TrainingDataError):
    """The ZIP was refused (zip slip, symlink, bomb, encryption, not a ZIP, bad caption)."""


class DatasetError(TrainingDataError):
    """The ZIP holds nothing to train on; the message says what it did hold."""


class VideoDecodeError(TrainingDataError):
    """A file is not a video that can be used (the dataset builder skips it with a warning)."""


class TrainingMemoryError(Exception):
    """The memory preflight estimates the job will not fit on the device (task error code 1403);
    the message gives the estimate, the memory available and what would fit."""

    code = ErrorCode.TASK_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
