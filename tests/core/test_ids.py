"""Asset ids: the same upload always becomes the same asset, another revision of a key a new one."""

from __future__ import annotations

import re

from pixelflow.core.ids import asset_id, normalize_etag, source_revision


def test_the_same_upload_always_gets_the_same_id_whatever_the_etag_quoting():
    ids = {asset_id("uploads", "talks/cat.mp4", etag) for etag in ("abc", '"abc"', ' "abc" ')}
    assert len(ids) == 1
    assert re.fullmatch(r"[0-9a-f]{24}", ids.pop())


def test_bucket_key_and_revision_each_make_another_asset():
    base = asset_id("uploads", "cat.mp4", "e1")
    others = [asset_id("other", "cat.mp4", "e1"), asset_id("uploads", "dog.mp4", "e1"),
              asset_id("uploads", "cat.mp4", "e2"), asset_id("uploads", "cat.mp4", "e1", "v1"),
              asset_id("uploads", "Cat.mp4", "e1")]
    assert len({base, *others}) == 1 + len(others)


def test_a_version_id_names_the_revision_and_null_means_unversioned():
    assert asset_id("b", "k", "e1", "v1") == asset_id("b", "k", "e2", "v1")  # the version decides
    assert asset_id("b", "k", "e1", "null") == asset_id("b", "k", "e1")  # S3's "null" version
    assert source_revision(None, None) == source_revision('""', None) == "unversioned"
    assert normalize_etag('""') is None and normalize_etag(None) is None
