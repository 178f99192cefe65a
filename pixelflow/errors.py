"""The one error type PixelFlow raises, with stable machine-readable codes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Stable codes. Users hang automations and scripts on these: never rename one."""

    # The source itself is unacceptable (never retried).
    EMPTY_FILE = "empty_file"
    NOT_MEDIA = "not_media"
    NO_VIDEO_STREAM = "no_video_stream"
    UNSUPPORTED_CONTAINER = "unsupported_container"
    UNSUPPORTED_CODEC = "unsupported_codec"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    DIMENSIONS_TOO_LARGE = "dimensions_too_large"
    DIMENSIONS_TOO_SMALL = "dimensions_too_small"
    FRAME_RATE_OUT_OF_RANGE = "frame_rate_out_of_range"
    INVALID_DURATION = "invalid_duration"
    CORRUPT_STREAM = "corrupt_stream"
    TRUNCATED = "truncated"
    SOURCE_NOT_FOUND = "source_not_found"
    WORK_BUDGET_EXCEEDED = "work_budget_exceeded"
    SOURCE_TOO_SLOW = "source_too_slow"
    RUN_TIME_EXCEEDED = "run_time_exceeded"
    MEMORY_LIMIT_EXCEEDED = "memory_limit_exceeded"
    TOO_MANY_STREAMS = "too_many_streams"
    METADATA_TOO_LARGE = "metadata_too_large"
    # A caption file beside the upload (or announced through the API) is unacceptable.
    INVALID_CAPTIONS = "invalid_captions"
    # The service had a problem (retried where it may help).
    INSUFFICIENT_DISK = "insufficient_disk"
    TRANSCODE_FAILED = "transcode_failed"
    TRANSCODE_TIMEOUT = "transcode_timeout"
    STORAGE_ERROR = "storage_error"
    ASSET_INCOMPLETE = "asset_incomplete"
    SOURCE_CHANGED = "source_changed"
    RECORD_UNREADABLE = "record_unreadable"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    INTERNAL = "internal"
    # Command-line answers about assets.
    ASSET_NOT_FOUND = "asset_not_found"
    WAIT_TIMEOUT = "wait_timeout"
    # HTTP API answers (pixelflow api, docs/api.md).
    UNAUTHORIZED = "unauthorized"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_FILENAME = "invalid_filename"
    PASSTHROUGH_TOO_LONG = "passthrough_too_long"
    UPLOAD_NOT_FOUND = "upload_not_found"
    UPLOAD_EXPIRED = "upload_expired"
    UPLOAD_NOT_WAITING = "upload_not_waiting"
    NOT_MULTIPART = "not_multipart"
    PART_OUT_OF_RANGE = "part_out_of_range"
    PARTS_MISSING = "parts_missing"
    SIZE_MISMATCH = "size_mismatch"
    ETAG_MISMATCH = "etag_mismatch"
    INVALID_CURSOR = "invalid_cursor"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    RECORDS_UNAVAILABLE = "records_unavailable"
    # Private playback (signed assets, playback tokens; docs/api.md).
    PLAYBACK_TOKEN_REQUIRED = "playback_token_required"
    PLAYBACK_TOKEN_INVALID = "playback_token_invalid"
    PLAYBACK_TOKEN_EXPIRED = "playback_token_expired"
    PLAYBACK_TOKEN_WRONG_ASSET = "playback_token_wrong_asset"
    ASSET_NOT_SIGNED = "asset_not_signed"
    EXPIRY_OUT_OF_RANGE = "expiry_out_of_range"
    PLAYBACK_NOT_CONFIGURED = "playback_not_configured"
    # Webhooks (docs/webhooks.md).
    INVALID_WEBHOOK_URL = "invalid_webhook_url"
    WEBHOOK_ADDRESS_NOT_ALLOWED = "webhook_address_not_allowed"
    WEBHOOK_NOT_FOUND = "webhook_not_found"
    DELIVERY_NOT_FOUND = "delivery_not_found"
    DELIVERY_PENDING = "delivery_pending"
    # Thumbnails at time t (GET /assets/<asset_id>/thumbnail.jpg, docs/api.md).
    INVALID_TIME = "invalid_time"
    INVALID_SIZE = "invalid_size"
    INVALID_FORMAT = "invalid_format"
    THUMBNAIL_TOO_LARGE = "thumbnail_too_large"
    THUMBNAILS_BUSY = "thumbnails_busy"
    THUMBNAILS_UNAVAILABLE = "thumbnails_unavailable"
    THUMBNAIL_FAILED = "thumbnail_failed"


#: Codes that describe the uploaded bytes: retrying cannot help.
REJECTION_CODES = frozenset(
    {
        ErrorCode.EMPTY_FILE,
        ErrorCode.NOT_MEDIA,
        ErrorCode.NO_VIDEO_STREAM,
        ErrorCode.UNSUPPORTED_CONTAINER,
        ErrorCode.UNSUPPORTED_CODEC,
        ErrorCode.TOO_LONG,
        ErrorCode.TOO_LARGE,
        ErrorCode.DIMENSIONS_TOO_LARGE,
        ErrorCode.DIMENSIONS_TOO_SMALL,
        ErrorCode.FRAME_RATE_OUT_OF_RANGE,
        ErrorCode.INVALID_DURATION,
        ErrorCode.CORRUPT_STREAM,
        ErrorCode.TRUNCATED,
        ErrorCode.SOURCE_NOT_FOUND,
        ErrorCode.WORK_BUDGET_EXCEEDED,
        ErrorCode.SOURCE_TOO_SLOW,
        ErrorCode.RUN_TIME_EXCEEDED,
        ErrorCode.MEMORY_LIMIT_EXCEEDED,
        ErrorCode.TOO_MANY_STREAMS,
        ErrorCode.METADATA_TOO_LARGE,
        ErrorCode.INVALID_CAPTIONS,
    }
)


#: Service codes that retrying the same task cannot fix: the flow acts on them itself (redoes the
#: missing renditions, or leaves an overwritten upload to the newer upload's run).
FINAL_CODES = frozenset({ErrorCode.ASSET_INCOMPLETE, ErrorCode.SOURCE_CHANGED})


class PixelFlowError(Exception):
    """An error with a stable code, a human sentence and optional details.

    Args:
        code: One of :class:`ErrorCode`.
        message: A sentence a user can act on.
        details: JSON-serialisable context (probe values, limits, paths are never included).

    Example:
        >>> err = PixelFlowError(ErrorCode.EMPTY_FILE, "The uploaded object is empty (0 bytes).")
        >>> str(err)
        'empty_file: The uploaded object is empty (0 bytes).'
        >>> err.retryable
        False
    """

    def __init__(self, code: ErrorCode | str, message: str, details: dict[str, Any] | None = None):
        self.code = ErrorCode(code)
        self.message = message
        self.details = dict(details or {})
        super().__init__(f"{self.code.value}: {message}")

    @property
    def retryable(self) -> bool:
        """Whether running the same work again could succeed."""
        return self.code not in REJECTION_CODES and self.code not in FINAL_CODES

    @property
    def is_rejection(self) -> bool:
        """Whether the error is about the uploaded source (a rejection, not a failure)."""
        return self.code in REJECTION_CODES

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "details": self.details}

    def __reduce__(self):  # keep the code across pickling (Prefect persists exceptions)
        return (PixelFlowError, (self.code.value, self.message, self.details))

    @classmethod
    def from_message(cls, text: str) -> "PixelFlowError | None":
        """Recover an error from ``"<code>: <message>"`` (for example a flow run's state message)."""
        code, sep, message = text.partition(": ")
        if not sep:
            return None
        try:
            return cls(code.strip(), message.strip())
        except ValueError:
            return None
