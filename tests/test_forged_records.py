"""Rejection records live where uploaders cannot write: an uploader who writes a well-formed
``error.json`` under the upload bucket's quarantine prefix (or anywhere else they can write)
does not make their upload count as rejected, and the reconciler still transcodes it."""

from __future__ import annotations

import json

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.upload import Upload
from pixelflow.settings import PixelFlowSettings
from tests.conftest import make_clip
from tests.test_failed_retries import _execute, deployment  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def test_a_forged_rejection_in_the_upload_bucket_rejects_nothing_and_the_upload_is_transcoded(
        prefect_server, deployment, buckets, media_dir, monkeypatch):  # noqa: F811
    from prefect.client.orchestration import get_client

    from pixelflow.ops import assets
    from pixelflow.ops.reconcile import RECONCILED_TAG, reconcile

    monkeypatch.setenv("PIXELFLOW_LADDER", "360")
    up, out = buckets
    s3 = s3_client()
    clip = make_clip(media_dir / "forged.mp4", seconds=2, size="640x360")
    s3.upload_file(str(clip), up, "forged.mp4")
    upload = Upload.from_head(up, "forged.mp4", s3.head_object(Bucket=up, Key="forged.mp4"))
    settings = PixelFlowSettings()
    layout = settings.layout(upload.asset_id)
    forged = json.dumps({"asset_id": upload.asset_id, "status": "rejected", "code": "not_media",
                         "message": "forged", "source": upload.to_dict(),
                         "recorded_at": "2026-01-01T00:00:00+00:00"}).encode()
    # Where the records used to be, and the records' own path, both in the upload bucket.
    for key in (f"{settings.quarantine_prefix}{upload.asset_id}/error.json", layout.error_key):
        s3.put_object(Bucket=up, Key=key, Body=forged)

    assert layout.error_key.startswith(settings.record_prefix)
    assert assets.published_or_rejected(upload.asset_id, settings, s3) is None
    assert assets.get_asset(upload.asset_id, settings, s3).status == assets.PROCESSING
    listed = {info.asset_id: info.status for info in assets.list_assets(settings, s3)}
    assert listed[upload.asset_id] == assets.PROCESSING

    # The upload's event was lost: the reconciler gives it its run, which publishes it.
    with get_client(sync_client=True) as client:
        (orphan,) = [o for o in reconcile(settings, s3, client, deployment, older_than=0) if o.asset_id == upload.asset_id]
        assert RECONCILED_TAG in client.read_flow_run(orphan.flow_run_id).tags
    assert _execute(orphan.flow_run_id, monkeypatch, {}).is_completed()
    assert assets.get_asset(upload.asset_id, settings, s3).status == assets.READY
    assert s3.head_object(Bucket=out, Key=layout.manifest_key)["ContentLength"] > 0
