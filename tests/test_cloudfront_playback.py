"""The CloudFront Function of deployments/aws/pixelflow.yaml that enforces private playback, run
with node (its code taken from the template as CloudFormation would deploy it; the ``cloudfront``
module's key-value store stood in by a table) against tokens made by PixelFlow's own Python code:
valid, expired, tampered, of another asset, with another key."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from pixelflow.core.playback_token import sign_token
from tests.test_cloudformation import load_template

KEY = "cloudfront-signing-key-" + "q" * 20
SIGNED, PUBLIC, OTHER = "a" * 24, "b" * 24, "c" * 24

# What stands in for `import cf from 'cloudfront'`: a key-value store read from STORE (whose
# get() throws for a missing key, as CloudFront's does), and a runner printing each answer.
_STUB = """const cf = { kvs: function (id) {
  if (id !== 'KVS-ID') throw new Error('unexpected store ' + id);
  return { get: async function (key) {
    if (Object.prototype.hasOwnProperty.call(STORE, key)) return STORE[key];
    throw new Error('KeyNotFound');
  } };
} };
"""
_RUNNER = """
const answers = [];
for (const uri of URIS) {
  const result = await handler({ request: { method: 'GET', uri: uri, querystring: {}, headers: {}, cookies: {} } });
  answers.push(result.statusCode
    ? { status: result.statusCode, code: JSON.parse(result.body.data).error.code, headers: result.headers }
    : { status: 'forwarded', uri: result.uri });
}
console.log(JSON.stringify(answers));
"""


def _function_code(default_policy: str) -> str:
    resource = load_template()["Resources"]["PlaybackFunction"]["Properties"]
    assert resource["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0"
    code = resource["FunctionCode"]["Fn::Sub"]
    code = code.replace("${PlaybackKeyValueStore.Id}", "KVS-ID").replace("${DefaultPlaybackPolicy}", default_policy)
    assert "${" not in code, "every !Sub variable is substituted"
    assert len(code.encode()) < 10 * 1024, "CloudFront Functions hold at most 10 KB"
    return code


def run_function(uris: list[str], store: dict[str, str], default_policy: str = "public", tmp_path=None) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    code = _function_code(default_policy)
    assert code.count("import cf from 'cloudfront';") == 1
    script = code.replace("import cf from 'cloudfront';",
                          f"const STORE = {json.dumps(store)};\nconst URIS = {json.dumps(uris)};\n{_STUB}")
    path = tmp_path / "function.mjs"
    path.write_text(script + _RUNNER)
    result = subprocess.run([node, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _token(asset: str, seconds: int = 600, key: str = KEY, **extra) -> str:
    now = int(time.time())
    return sign_token(key.encode(), asset, expires_at=now + seconds, issued_at=now, **extra)


def test_the_cloudfront_function_checks_tokens_before_the_cache(tmp_path):
    store = {"signing_key": KEY, SIGNED: "signed", PUBLIC: "public"}
    valid = _token(SIGNED, viewer_id="viewer-1")
    header, payload, signature = valid.split(".")
    forged_claims = _token(SIGNED, seconds=10**6).split(".")[1]
    now = int(time.time())
    cases = {
        # A valid token: forwarded without it, so the cache key (and S3) see /assets/<id>/...
        f"/t/{valid}/assets/{SIGNED}/master.m3u8": {"status": "forwarded", "uri": f"/assets/{SIGNED}/master.m3u8"},
        f"/t/{valid}/assets/{SIGNED}/720p/seg_00003.m4s":
            {"status": "forwarded", "uri": f"/assets/{SIGNED}/720p/seg_00003.m4s"},
        f"/t/{valid}/assets/{SIGNED}/poster.jpg": {"status": "forwarded", "uri": f"/assets/{SIGNED}/poster.jpg"},
        # Refused, with the same codes as the local servers.
        f"/assets/{SIGNED}/master.m3u8": {"status": 403, "code": "playback_token_required"},
        f"/assets/{SIGNED}/720p/seg_00003.m4s": {"status": 403, "code": "playback_token_required"},
        f"/t/{sign_token(KEY.encode(), SIGNED, expires_at=now - 1, issued_at=now - 60)}/assets/{SIGNED}/master.m3u8":
            {"status": 403, "code": "playback_token_expired"},
        f"/t/{header}.{forged_claims}.{signature}/assets/{SIGNED}/master.m3u8":
            {"status": 403, "code": "playback_token_invalid"},
        f"/t/{header}.{payload}.{signature[:-3]}xyz/assets/{SIGNED}/master.m3u8":
            {"status": 403, "code": "playback_token_invalid"},
        f"/t/{_token(SIGNED, key='another-key-' + 'w' * 30)}/assets/{SIGNED}/master.m3u8":
            {"status": 403, "code": "playback_token_invalid"},
        f"/t/{_token(OTHER)}/assets/{SIGNED}/master.m3u8": {"status": 403, "code": "playback_token_wrong_asset"},
        f"/t/not-a-token/assets/{SIGNED}/master.m3u8": {"status": 403, "code": "playback_token_invalid"},
        # %-escapes, which S3 would decode into another key than the one checked, are refused.
        f"/assets/%61{SIGNED[1:]}/master.m3u8": {"status": 404, "code": "not_found"},
        f"/assets/{SIGNED}/%6daster.m3u8": {"status": 404, "code": "not_found"},
        f"/t/{valid}/assets/{SIGNED}/..%2f{PUBLIC}/master.m3u8": {"status": 404, "code": "not_found"},
        # Public assets, and assets the store does not know (the default policy: public), as before.
        f"/assets/{PUBLIC}/master.m3u8": {"status": "forwarded", "uri": f"/assets/{PUBLIC}/master.m3u8"},
        f"/assets/{OTHER}/360p/init.mp4": {"status": "forwarded", "uri": f"/assets/{OTHER}/360p/init.mp4"},
    }
    answers = run_function(list(cases), store, tmp_path=tmp_path)
    for (uri, expected), answer in zip(cases.items(), answers):
        assert {k: answer.get(k) for k in expected} == expected, uri
    refused = next(a for a in answers if a["status"] == 403)
    assert refused["headers"]["cache-control"] == {"value": "no-store"}

    # Without a signing key in the store no token is valid; with the default policy signed,
    # assets the store does not know are refused too.
    answers = run_function([f"/t/{valid}/assets/{SIGNED}/master.m3u8", f"/assets/{OTHER}/master.m3u8",
                            f"/assets/{PUBLIC}/master.m3u8"], {SIGNED: "signed", PUBLIC: "public"},
                           default_policy="signed", tmp_path=tmp_path)
    assert [(a["status"], a.get("code")) for a in answers] == [
        (403, "playback_token_invalid"), (403, "playback_token_required"), ("forwarded", None)]


def test_the_distribution_runs_the_function_on_every_viewer_request():
    resources = load_template()["Resources"]
    behavior = resources["AssetsDistribution"]["Properties"]["DistributionConfig"]["DefaultCacheBehavior"]
    assert behavior["FunctionAssociations"] == [
        {"EventType": "viewer-request", "FunctionARN": {"Fn::GetAtt": ["PlaybackFunction", "FunctionARN"]}}]
    # Only one cache behavior: no path reaches the bucket around the function.
    assert "CacheBehaviors" not in resources["AssetsDistribution"]["Properties"]["DistributionConfig"]
    function = resources["PlaybackFunction"]["Properties"]
    assert function["FunctionConfig"]["KeyValueStoreAssociations"] == [
        {"KeyValueStoreARN": {"Fn::GetAtt": ["PlaybackKeyValueStore", "Arn"]}}]
    assert resources["PlaybackFunction"]["Condition"] == resources["PlaybackKeyValueStore"]["Condition"] == "CreateCdn"


def test_the_playback_sync_function_is_least_privilege_and_reads_the_records_stream():
    from tests.test_cloudformation import permissions, render

    template = load_template()
    resources = template["Resources"]
    kvs = "<PlaybackKeyValueStore.Arn>"
    assert permissions(template, "PlaybackSyncRole") == {
        *{(f"dynamodb:{action}", "<RecordsTable.StreamArn>")
          for action in ("DescribeStream", "GetRecords", "GetShardIterator", "ListStreams")},
        ("logs:CreateLogStream", "<PlaybackSyncLogGroup.Arn>"), ("logs:PutLogEvents", "<PlaybackSyncLogGroup.Arn>"),
        ("secretsmanager:GetSecretValue", "<PlaybackSigningKeySecret>"),
        *{(f"cloudfront-keyvaluestore:{action}", kvs) for action in ("DescribeKeyValueStore", "GetKey", "PutKey", "DeleteKey")},
    }
    stream = resources["RecordsTable"]["Properties"]["StreamSpecification"]
    assert render(stream) == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    source = resources["PlaybackSyncEventSource"]["Properties"]
    assert render(source["EventSourceArn"]) == "<RecordsTable.StreamArn>"
    assert resources["PlaybackSyncFunction"]["Properties"]["Handler"] == \
        "pixelflow.ops.lambda_handlers.playback_sync_handler"
    (pattern,) = source["FilterCriteria"]["Filters"]
    assert json.loads(pattern["Pattern"]) == {"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "asset#"}]}}}}
