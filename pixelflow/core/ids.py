"""Deterministic identifiers."""

from __future__ import annotations

import hashlib


def normalize_etag(etag: str | None) -> str | None:
    """Strip the quotes S3 puts around ETags.

    >>> normalize_etag('"abc"')
    'abc'
    """
    if etag is None:
        return None
    etag = etag.strip().strip('"')
    return etag or None


def source_revision(etag: str | None, version_id: str | None) -> str:
    """What distinguishes one upload of a key from another: the version id when the bucket is
    versioned, else the ETag.

    >>> source_revision('"e1"', None)
    'etag:e1'
    >>> source_revision('"e1"', "v7")
    'version:v7'
    """
    if version_id and version_id != "null":
        return f"version:{version_id}"
    etag = normalize_etag(etag)
    return f"etag:{etag}" if etag else "unversioned"


def asset_id(bucket: str, key: str, etag: str | None = None, version_id: str | None = None) -> str:
    """The asset an upload becomes: the same bucket, key and revision always give the same id,
    and a new revision (new ETag or version) of the same key gives a new asset.

    >>> asset_id("uploads", "cat.mp4", "e1") == asset_id("uploads", "cat.mp4", '"e1"')
    True
    >>> asset_id("uploads", "cat.mp4", "e1") != asset_id("uploads", "cat.mp4", "e2")
    True
    >>> len(asset_id("uploads", "cat.mp4", "e1"))
    24
    """
    material = "\x00".join(["pixelflow-asset-v1", bucket, key, source_revision(etag, version_id)])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:24]
