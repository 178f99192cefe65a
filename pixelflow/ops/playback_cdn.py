"""CloudFront's view of private playback: the KeyValueStore its playback function reads.

The distribution of ``deployments/aws/pixelflow.yaml`` runs a CloudFront Function on every viewer
request (no origin round trip): a ``/t/<token>/assets/<id>/...`` request needs a valid token of
that asset (checked with the key ``signing_key`` of the store) and is rewritten to
``/assets/<id>/...``, so the cache key holds no token; a plain ``/assets/<id>/...`` request is
refused when the store holds ``<id>`` = ``signed`` (assets absent from it follow the stack's
default policy). The API keeps the store up to date (:class:`CdnPlaybackStore`):
the signing key at start-up, an asset when ``PATCH`` sets its policy (before it answers);
and the stack's playback sync function (:func:`sync_from_stream`, on the records table's stream)
writes every policy any writer recorded, the transcode flow's first write of an asset uploaded as
``signed`` among them, so CloudFront refuses its plain URLs from before it is published.

The store's data plane (``cloudfront-keyvaluestore``) is signed with SigV4A, which botocore
does through ``awscrt`` (``botocore[crt]``, installed with PixelFlow).
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.ops.playback_cdn")

#: The store's key holding the HMAC signing key of playback tokens.
SIGNING_KEY = "signing_key"
_ATTEMPTS = 5


class CdnPlaybackStore:
    """The CloudFront KeyValueStore ``arn``, written through ``client``.

    It holds only the assets whose policy differs from ``default_policy`` (the stack's
    ``DefaultPlaybackPolicy``, which the function applies to assets absent from it): a store
    holds at most 5 MB, some 140,000 such assets of about 35 bytes each.
    """

    def __init__(self, arn: str, client: Any = None, default_policy: str = "public"):
        if client is None:
            import boto3

            client = boto3.client("cloudfront-keyvaluestore", region_name="us-east-1")
        self.arn = arn
        self.client = client
        self.default_policy = default_policy

    @classmethod
    def from_settings(cls, settings: PixelFlowSettings, key: bytes | None,
                      client: Any = None) -> "CdnPlaybackStore | None":
        """The store of ``PIXELFLOW_PLAYBACK_KVS_ARN`` (``None`` when unset), holding ``key``."""
        if not settings.playback_kvs_arn:
            return None
        store = cls(settings.playback_kvs_arn, client, settings.default_playback_policy)
        if key is not None:
            try:
                store.ensure(SIGNING_KEY, key.decode())
            except Exception as exc:  # noqa: BLE001 - CloudFront then refuses every token: fail closed
                logger.error("could not write the signing key to the playback store: %s", type(exc).__name__)
        return store

    def _write(self, action: str, **kwargs: Any) -> None:
        """``put_key`` / ``delete_key`` with the store's current ETag, again when another writer won."""
        for attempt in range(_ATTEMPTS):
            etag = self.client.describe_key_value_store(KvsARN=self.arn)["ETag"]
            try:
                getattr(self.client, action)(KvsARN=self.arn, IfMatch=etag, **kwargs)
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "ResourceNotFoundException" and action == "delete_key":
                    return
                if code not in ("ConflictException", "ValidationException") or attempt == _ATTEMPTS - 1:
                    raise

    def _get(self, key: str) -> str | None:
        try:
            return self.client.get_key(KvsARN=self.arn, Key=key).get("Value")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
        return None

    def ensure(self, key: str, value: str) -> None:
        """``key`` = ``value`` in the store (written only when it differs; values are never logged)."""
        if self._get(key) != value:
            self._write("put_key", Key=key, Value=value)

    def remove(self, key: str) -> None:
        """``key`` absent from the store."""
        if self._get(key) is not None:
            self._write("delete_key", Key=key)

    def put_policy(self, asset_id: str, policy: str | None) -> None:
        """What CloudFront's function knows of ``asset_id``: its policy when it is not the default
        one, else (or for a deleted asset, ``None``) nothing."""
        if policy is None or policy == self.default_policy:
            self.remove(asset_id)
        else:
            self.ensure(asset_id, policy)


def policy_changes(stream_records: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """``(asset_id, policy)`` for each asset record of a DynamoDB stream batch (the records table's,
    ``NEW_AND_OLD_IMAGES``) whose playback policy is new or changed, in order; ``None`` for an
    asset deleted since (its tombstone).

    Example:
        >>> policy_changes([{"eventName": "INSERT", "dynamodb": {"NewImage": {
        ...     "pk": {"S": "asset#0123456789abcdef01234567"}, "playback_policy": {"S": "signed"}}}}])
        [('0123456789abcdef01234567', 'signed')]
    """
    changes: list[tuple[str, str | None]] = []
    for record in stream_records:
        images = record.get("dynamodb") or {}
        new, old = images.get("NewImage") or {}, images.get("OldImage") or {}
        pk = (new.get("pk") or {}).get("S", "")
        if record.get("eventName") not in ("INSERT", "MODIFY") or not pk.startswith("asset#"):
            continue
        policy = None if "deleted_at" in new else (new.get("playback_policy") or {}).get("S")
        before = (old.get("playback_policy") or {}).get("S")
        if policy != before and (policy is not None or before is not None):
            changes.append((pk[len("asset#"):], policy))
    return changes


def sync_from_stream(store: CdnPlaybackStore, stream_records: list[dict[str, Any]]) -> int:
    """Write each asset's new policy of a stream batch to the store; how many were written."""
    changes = policy_changes(stream_records)
    for asset_id, policy in changes:
        store.put_policy(asset_id, policy)
    return len(changes)
