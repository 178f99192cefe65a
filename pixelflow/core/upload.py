"""One upload: the S3 object a user put in the upload bucket, and the asset it becomes.

An :class:`Upload` is built once where PixelFlow first learns of an object (an S3 event, a
``HEAD``, a listing, a command-line argument) and passed on; its asset id and its asset's
layout are derived from it, never rebuilt by hand.

Example:
    >>> upload = Upload("pixelflow-uploads", "talks/keynote.mp4", etag='"9b2cf535f27731c9"', size=1024)
    >>> upload.etag, upload.uri
    ('9b2cf535f27731c9', 's3://pixelflow-uploads/talks/keynote.mp4')
    >>> upload.asset_id == Upload("pixelflow-uploads", "talks/keynote.mp4", "9b2cf535f27731c9").asset_id
    True
    >>> upload.layout().manifest_key == f"assets/{upload.asset_id}/manifest.json"
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pixelflow.core.ids import asset_id, normalize_etag, source_revision
from pixelflow.core.layout import AssetLayout


@dataclass(frozen=True)
class Upload:
    """An uploaded object, as S3 describes it.

    Attributes:
        bucket: The upload bucket.
        key: The object key, as stored (not URL-encoded).
        etag: The object's ETag, without quotes (``None`` when not known yet).
        version_id: The object version, in a versioned bucket.
        size: Size in bytes, when known.
    """

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "etag", normalize_etag(self.etag))
        if self.version_id in ("", "null"):
            object.__setattr__(self, "version_id", None)

    @property
    def asset_id(self) -> str:
        """The asset this upload becomes (see :func:`pixelflow.core.ids.asset_id`)."""
        return asset_id(self.bucket, self.key, self.etag, self.version_id)

    @property
    def revision(self) -> str:
        """What tells this upload of the key from another (``version:...`` or ``etag:...``)."""
        return source_revision(self.etag, self.version_id)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def layout(self, asset_prefix: str = "assets/", quarantine_prefix: str = "quarantine/",
               record_prefix: str = "records/") -> AssetLayout:
        """Where this upload's asset, its records and its kept copy live."""
        return AssetLayout.of(self.asset_id, asset_prefix, quarantine_prefix, record_prefix)

    def same_revision(self, other: "Upload") -> bool:
        """Whether ``other`` (for example the object as a later ``HEAD`` sees it) is this upload.

        An upload whose event carried no ETag matches any revision.

        >>> Upload("b", "k", "e1").same_revision(Upload("b", "k", '"e1"', size=3))
        True
        >>> Upload("b", "k", "e1").same_revision(Upload("b", "k", "e2"))
        False
        """
        if self.version_id or self.etag is None:
            return (self.bucket, self.key) == (other.bucket, other.key)
        return (self.bucket, self.key, self.etag) == (other.bucket, other.key, other.etag)

    def to_dict(self) -> dict[str, Any]:
        """The upload as JSON (records, manifests, event payloads)."""
        return {"bucket": self.bucket, "key": self.key, "etag": self.etag, "version_id": self.version_id,
                "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Upload":
        """The upload a :meth:`to_dict` (or an S3-event-like mapping) describes; other keys are ignored.

        >>> Upload.from_dict({"bucket": "b", "key": "k", "etag": '"e"', "size": "7", "extra": 1})
        Upload(bucket='b', key='k', etag='e', version_id=None, size=7)
        """
        size = data.get("size")
        return cls(str(data["bucket"]), str(data["key"]), data.get("etag") or None, data.get("version_id") or None,
                   int(size) if size not in (None, "") else None)

    @classmethod
    def from_head(cls, bucket: str, key: str, head: Mapping[str, Any]) -> "Upload":
        """The upload an S3 ``HEAD``/``GET`` response (or a listing entry) describes.

        >>> Upload.from_head("b", "k", {"ETag": '"e"', "ContentLength": 5, "VersionId": "null"})
        Upload(bucket='b', key='k', etag='e', version_id=None, size=5)
        """
        size = head.get("ContentLength", head.get("Size"))
        return cls(bucket, key, head.get("ETag"), head.get("VersionId"), int(size) if size is not None else None)
