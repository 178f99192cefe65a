"""What the local stack provisions for the API (moto over HTTP): the records table with its two
listing indexes, and the upload bucket's CORS rule for browsers PUTting through presigned URLs,
idempotently and keeping the bucket's other rules."""

from __future__ import annotations

import pytest

from pixelflow.aws import dynamodb_client, s3_client
from pixelflow.local.stack.provision import CORS_RULE_ID, provision
from tests.events_helpers import isolated_settings

pytestmark = pytest.mark.integration


def test_provision_creates_the_records_table_and_the_upload_cors_rule_once(moto_server):
    settings = isolated_settings(records_table="records-provision-test")
    provisioned = provision(settings)
    s3 = s3_client()
    other = {"ID": "someone-elses", "AllowedMethods": ["GET"], "AllowedOrigins": ["https://example.com"]}
    rules = s3.get_bucket_cors(Bucket=settings.upload_bucket)["CORSRules"]
    s3.put_bucket_cors(Bucket=settings.upload_bucket, CORSConfiguration={"CORSRules": [other, *rules]})
    again = provision(settings)

    assert provisioned.records_table == again.records_table == "records-provision-test"
    table = dynamodb_client().describe_table(TableName="records-provision-test")["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert sorted(i["IndexName"] for i in table["GlobalSecondaryIndexes"]) == ["assets_by_created", "assets_by_status"]
    rules = s3.get_bucket_cors(Bucket=settings.upload_bucket)["CORSRules"]
    ours = [r for r in rules if r.get("ID") == CORS_RULE_ID]
    assert len(ours) == 1 and ours[0]["AllowedMethods"] == ["PUT"] and ours[0]["ExposeHeaders"] == ["ETag"]
    assert any(r.get("ID") == "someone-elses" for r in rules)
    # Only the upload bucket takes PUTs from browsers.
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchCORSConfiguration"):
        s3.get_bucket_cors(Bucket=settings.output_bucket)


def test_the_stack_starts_the_api_with_a_kept_token(moto_server, tmp_path):
    """What `pixelflow stack up` adds: `pixelflow api` as a supervised child on its port, with a
    token generated once (kept, owner-only) and the URL recorded in the state file."""
    import json
    import stat

    import httpx

    from pixelflow.local.processes import free_port
    from pixelflow.local.stack import Stack, StackConfig
    from tests.api_helpers import make_settings

    settings = make_settings(api_tokens=[])
    config = StackConfig(home=tmp_path / "stack", api_port=free_port(), env={
        "PIXELFLOW_UPLOAD_BUCKET": settings.upload_bucket, "PIXELFLOW_OUTPUT_BUCKET": settings.output_bucket,
        "PIXELFLOW_RECORDS_TABLE": settings.records_table})
    stack = Stack(config, log=lambda message: None)
    stack.aws_endpoint, stack.api_url = moto_server, "http://127.0.0.1:9/api"
    try:
        stack.start_api()
        token = stack.api_token
        assert len(token) >= 32 and stat.S_IMODE((config.home / "api-token").stat().st_mode) == 0o600
        assert json.loads(config.state_file.read_text())["http_api_url"] == stack.http_api_url
        with httpx.Client(base_url=stack.http_api_url, timeout=10) as client:
            assert client.get("/v1/assets", headers={"Authorization": f"Bearer {token}"}).status_code == 200
            assert client.get("/v1/assets").status_code == 401
            created = client.post("/v1/uploads", headers={"Authorization": f"Bearer {token}"},
                                  json={"filename": "a.mp4", "size": 3}).json()["data"]
            # Signed playback works out of the box: the stack gave its API a kept signing key.
            signed = client.post("/v1/uploads", headers={"Authorization": f"Bearer {token}"},
                                 json={"filename": "a.mp4", "size": 3, "playback_policy": "signed"})
            assert signed.status_code == 201 and signed.json()["data"]["playback_policy"] == ["signed"]
        assert stat.S_IMODE((config.home / "playback-key").stat().st_mode) == 0o600
        assert created["url"].startswith(f"{moto_server}/{settings.upload_bucket}/uploads/")
        assert Stack(config)._api_token() == token  # kept across stacks of the same home
    finally:
        stack.down()
