"""What the local stack provisions for the API (moto over HTTP): the records table with its two
listing indexes, and the upload bucket's CORS rule for browsers PUTting through presigned URLs,
idempotently and keeping the bucket's other rules."""

from __future__ import annotations

import pytest

from pixelflow.aws import dynamodb_client, s3_client
from pixelflow.stack.provision import CORS_RULE_ID, provision
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
