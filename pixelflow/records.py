"""Upload and asset records: one DynamoDB table that answers a get in one request and a page of a
list in one query.

S3 stays the source of truth for published objects (``manifest.json`` is written last); the
records are an index of them that the HTTP API (:mod:`pixelflow.ops.api`) reads instead of listing
buckets. The transcode flow writes an asset's record at each state change (``preparing`` with
its progress, ``ready``, ``errored``); the API writes upload records and the tombstone of a
deleted asset; :func:`pixelflow.ops.reconcile.repair_records` corrects a record that disagrees with
S3 (a crash between the two writes) and backfills assets that have none.

The table (``PIXELFLOW_RECORDS_TABLE``, pay per request) has one key, ``pk``:

* ``upload#<upload_id>``: an upload made through the API (``kind`` ``upload``).
* ``asset#<asset_id>``: an asset (``kind`` ``asset``), with ``created_sk`` =
  ``<created_at>#<asset_id>`` and ``status_kind`` = ``asset#<status>``. Two sparse global
  secondary indexes list assets newest first: ``assets_by_created`` (``kind``, ``created_sk``)
  and ``assets_by_status`` (``status_kind``, ``created_sk``).
* A deleted asset keeps a tombstone under its key (``deleted_at`` set, ``kind`` and
  ``status_kind`` removed, so it leaves both indexes). Every state write is conditional on
  ``attribute_not_exists(deleted_at)``: a late or duplicate event for a deleted asset never
  resurrects it.

Example:
    >>> from pixelflow.core.upload import Upload
    >>> asset_fields_from_manifest({"duration": 4.0, "renditions": [
    ...     {"name": "360p", "width": 640, "height": 360, "bandwidth": 800000, "files": ["x"]}]})["max_resolution"]
    '640x360'
    >>> upload_id_from_key("uploads/7d1e2f3a4b5c6d7e8f901234/cat.mp4", "uploads/")
    '7d1e2f3a4b5c6d7e8f901234'
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from math import gcd
from typing import Any, Iterable, Mapping

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.records")

#: Asset states a record holds (the API's vocabulary, Mux's).
PREPARING, READY, ERRORED = "preparing", "ready", "errored"
ASSET_STATES = (PREPARING, READY, ERRORED)
#: Upload states.
WAITING, ASSET_CREATED, UPLOAD_ERRORED, CANCELLED, TIMED_OUT = "waiting", "asset_created", "errored", "cancelled", "timed_out"
UPLOAD_STATES = (WAITING, ASSET_CREATED, UPLOAD_ERRORED, CANCELLED, TIMED_OUT)

#: Who may play an asset: anyone with its URL, or only requests with a playback token.
PUBLIC, SIGNED = "public", "signed"
PLAYBACK_POLICIES = (PUBLIC, SIGNED)
BY_CREATED, BY_STATUS = "assets_by_created", "assets_by_status"
_UPLOAD_ID = re.compile(r"^[0-9a-f]{24}$")
_serializer, _deserializer = TypeSerializer(), TypeDeserializer()


def now_iso() -> str:
    """The current UTC time, ISO 8601 with microseconds (records sort on it).

    >>> now_iso().endswith("Z") and len(now_iso()) == 27
    True
    """
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def upload_id_from_key(key: str, prefix: str) -> str | None:
    """The API upload an upload-bucket key belongs to (``<prefix><upload_id>/<filename>``), if any.

    >>> upload_id_from_key("videos/cat.mp4", "uploads/") is None
    True
    """
    if not key.startswith(prefix):
        return None
    candidate, sep, _ = key[len(prefix):].partition("/")
    return candidate if sep and _UPLOAD_ID.match(candidate) else None


def aspect_ratio(width: int, height: int) -> str | None:
    """``width:height`` reduced, as Mux reports it.

    >>> aspect_ratio(1920, 1080), aspect_ratio(1080, 1920), aspect_ratio(0, 5)
    ('16:9', '9:16', None)
    """
    if width <= 0 or height <= 0:
        return None
    divisor = gcd(width, height)
    ratio = Fraction(width, height)
    if ratio.denominator > 100:  # odd sizes: round to a readable ratio
        ratio = ratio.limit_denominator(20)
        return f"{ratio.numerator}:{ratio.denominator}"
    return f"{width // divisor}:{height // divisor}"


def asset_fields_from_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What an asset's record keeps of its ``manifest.json``: duration, aspect ratio, the largest
    rendition, the renditions (without their file lists), the storyboard's layout, the downloads, the subtitles."""
    renditions = [{k: r.get(k) for k in ("name", "width", "height", "bandwidth", "average_bandwidth", "frame_rate",
                                         "codecs") if r.get(k) is not None}
                  for r in manifest.get("renditions") or []]
    largest = max(renditions, key=lambda r: (r.get("width", 0) * r.get("height", 0)), default=None)
    duration = manifest.get("duration")
    fields: dict[str, Any] = {"renditions": renditions,
                              "duration": float(duration) if duration is not None else None}
    if not renditions and manifest.get("audio"):
        fields["audio_only"] = True
    if manifest.get("storyboard"):
        fields["storyboard"] = dict(manifest["storyboard"])
    if isinstance(manifest.get("poster"), str):
        fields["poster"] = manifest["poster"]
    if manifest.get("downloads"):
        fields["downloads"] = [dict(d) for d in manifest["downloads"]]
    if manifest.get("subtitles"):
        fields["subtitles"] = [{k: s.get(k) for k in ("language", "name", "default", "playlist", "file")}
                               for s in manifest["subtitles"]]
    if largest:
        fields["max_resolution"] = f"{largest.get('width')}x{largest.get('height')}"
        fields["aspect_ratio"] = aspect_ratio(int(largest.get("width") or 0), int(largest.get("height") or 0))
    return fields


# --- item encoding ------------------------------------------------------------------------------

def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {str(k): _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_from_dynamo(v) for v in value]
    return value


def _serialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in _to_dynamo(item).items()}


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return _from_dynamo({k: _deserializer.deserialize(v) for k, v in item.items()})


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _encode_cursor(key: Mapping[str, Any]) -> str:
    raw = json.dumps(_deserialize(key), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, expected: set[str]) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, dict) or set(key) != expected or not all(isinstance(v, str) and len(v) < 200
                                                                    for v in key.values()):
        raise PixelFlowError(ErrorCode.INVALID_CURSOR, "The cursor is not one this API returned.")
    return _serialize(key)


class Records:
    """Upload and asset records in one DynamoDB table (see the module's description).

    Args:
        table: The table's name.
        client: A boto3 DynamoDB client (default: :func:`pixelflow.aws.dynamodb_client`).
    """

    def __init__(self, table: str, client: Any = None):
        if client is None:
            from pixelflow.aws import dynamodb_client

            client = dynamodb_client()
        self.table = table
        self.client = client

    @classmethod
    def from_settings(cls, settings: PixelFlowSettings, client: Any = None) -> "Records":
        return cls(settings.records_table, client)

    # --- table ------------------------------------------------------------------------------
    def ensure_table(self) -> bool:
        """Create the table and its indexes (pay per request) unless it exists; ``True`` if created."""
        try:
            self.client.describe_table(TableName=self.table)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
        self.client.create_table(TableName=self.table, **table_definition())
        self.client.get_waiter("table_exists").wait(TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        return True

    # --- low level ----------------------------------------------------------------------------
    def _get(self, pk: str) -> dict[str, Any] | None:
        response = self.client.get_item(TableName=self.table, Key={"pk": {"S": pk}}, ConsistentRead=True)
        item = response.get("Item")
        return _deserialize(item) if item else None

    def _update(self, pk: str, set_fields: Mapping[str, Any], *, remove: Iterable[str] = (),
                if_not_exists: Mapping[str, Any] | None = None, condition: str | None = None,
                condition_names: Mapping[str, str] | None = None,
                condition_values: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """SET ``set_fields`` (``None`` values are removed), keep ``if_not_exists`` fields' first
        values; ``None`` when ``condition`` does not hold."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets, removes = [], list(remove)
        for index, (name, value) in enumerate(set_fields.items()):
            if value is None:
                removes.append(name)
                continue
            names[f"#s{index}"] = name
            values[f":s{index}"] = value
            sets.append(f"#s{index} = :s{index}")
        for index, (name, value) in enumerate((if_not_exists or {}).items()):
            names[f"#n{index}"] = name
            values[f":n{index}"] = value
            sets.append(f"#n{index} = if_not_exists(#n{index}, :n{index})")
        for index, name in enumerate(removes):
            names[f"#r{index}"] = name
        expression = ""
        if sets:
            expression += "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
        names.update(condition_names or {})
        values.update(condition_values or {})
        request: dict[str, Any] = {"TableName": self.table, "Key": {"pk": {"S": pk}},
                                   "UpdateExpression": expression.strip(), "ExpressionAttributeNames": names,
                                   "ReturnValues": "ALL_NEW"}
        if values:
            request["ExpressionAttributeValues"] = _serialize(values)
        if condition:
            request["ConditionExpression"] = condition
        try:
            response = self.client.update_item(**request)
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return _deserialize(response["Attributes"])

    # --- uploads ------------------------------------------------------------------------------
    def create_upload(self, upload: Mapping[str, Any]) -> None:
        """Store a new upload record (``upload["id"]`` must be new)."""
        item = {**upload, "pk": f"upload#{upload['id']}", "kind": "upload"}
        self.client.put_item(TableName=self.table, Item=_serialize(item), ConditionExpression="attribute_not_exists(pk)")

    def get_upload(self, upload_id: str) -> dict[str, Any] | None:
        return self._get(f"upload#{upload_id}")

    def update_upload(self, upload_id: str, changes: Mapping[str, Any], *,
                      expect_status: str | None = None) -> dict[str, Any] | None:
        """Apply ``changes`` (``None`` values are removed) to an existing upload; with
        ``expect_status``, only while it is in that state. ``None`` when the upload is missing or
        in another state."""
        condition, names, values = "attribute_exists(pk)", {}, {}
        if expect_status is not None:
            condition += " AND #current = :expected"
            names, values = {"#current": "status"}, {":expected": expect_status}
        return self._update(f"upload#{upload_id}", {**changes, "updated_at": now_iso()}, condition=condition,
                            condition_names=names, condition_values=values)

    def delete_upload(self, upload_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key={"pk": {"S": f"upload#{upload_id}"}})

    # --- assets -------------------------------------------------------------------------------
    def get_asset(self, asset_id: str) -> dict[str, Any] | None:
        """The asset's record, its tombstone (``deleted_at`` set) or ``None``."""
        return self._get(f"asset#{asset_id}")

    def record_asset(self, asset_id: str, status: str, fields: Mapping[str, Any] | None = None, *,
                     first: Mapping[str, Any] | None = None, created_at: str | None = None,
                     only_if_new: bool = False) -> dict[str, Any] | None:
        """Write the asset's state (``preparing``, ``ready``, ``errored``) and ``fields``.

        Args:
            asset_id: The asset.
            status: Its new state.
            fields: Attributes to set (``None`` values are removed).
            first: Attributes kept from the first write that had them (``passthrough``,
                ``upload_id``, ``source``).
            created_at: When the asset was created (default: now, on the first write only).
            only_if_new: Write ``status`` and ``fields`` only where the record lacks them (the API
                noticing an upload's object must not overwrite what the flow recorded).

        Returns:
            The record as written, or ``None`` when the asset was deleted (its tombstone stays).
        """
        if status not in ASSET_STATES:
            raise ValueError(f"unknown asset state {status!r}")
        created = created_at or now_iso()
        keep = {"created_at": created, "created_sk": f"{created}#{asset_id}", "id": asset_id}
        keep.update({k: v for k, v in (first or {}).items() if v is not None})
        state = {**(fields or {}), "status": status, "kind": "asset", "status_kind": f"asset#{status}"}
        if only_if_new:
            keep.update({k: v for k, v in state.items() if v is not None})
            state = {}
        return self._update(f"asset#{asset_id}", {**state, "updated_at": now_iso()},
                            if_not_exists=keep, condition="attribute_not_exists(deleted_at)")

    def tombstone_asset(self, asset_id: str) -> dict[str, Any] | None:
        """Mark the asset deleted (it leaves every listing, and no later state write revives it).

        Returns:
            The record as it was before, or ``None`` when there was none or it was already deleted.
        """
        try:
            response = self.client.put_item(
                TableName=self.table, ReturnValues="ALL_OLD",
                Item=_serialize({"pk": f"asset#{asset_id}", "id": asset_id, "deleted_at": now_iso()}),
                ConditionExpression="attribute_not_exists(deleted_at)")
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        old = response.get("Attributes")
        return _deserialize(old) if old else {}

    def revive_asset(self, asset_id: str, modified_at: str) -> bool:
        """Remove a deleted asset's tombstone when its upload was made again after the deletion
        (the object's ``LastModified``, ``modified_at``, ISO 8601 UTC, is not older than the
        second the asset was deleted in): a new upload of the same bytes to the same key is a new
        life of the asset, while a late or duplicate event for the deleted one is not. Whether the
        tombstone was removed."""
        tombstone = self.get_asset(asset_id)
        deleted_at = (tombstone or {}).get("deleted_at")
        if not deleted_at or modified_at[:19] < deleted_at[:19]:  # S3 keeps whole seconds
            return False
        try:
            self.client.delete_item(TableName=self.table, Key={"pk": {"S": f"asset#{asset_id}"}},
                                    ConditionExpression="deleted_at = :deleted",
                                    ExpressionAttributeValues={":deleted": {"S": deleted_at}})
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def set_playback_policy(self, asset_id: str, policy: str) -> dict[str, Any] | None:
        """Give an existing, not deleted asset the playback policy ``policy`` (``public`` or
        ``signed``); the record as written, or ``None`` when there is no such asset."""
        if policy not in PLAYBACK_POLICIES:
            raise ValueError(f"unknown playback policy {policy!r}")
        return self._update(f"asset#{asset_id}", {"playback_policy": policy, "updated_at": now_iso()},
                            condition="attribute_exists(pk) AND attribute_not_exists(deleted_at)")

    def list_assets(self, status: str | None = None, limit: int = 25,
                    cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of assets, newest first, and the cursor of the next page (``None`` at the end).

        Raises:
            PixelFlowError: ``invalid_cursor`` for a cursor this method did not return.
        """
        if status is None:
            index, condition, values = BY_CREATED, "#h = :h", {":h": {"S": "asset"}}
            names, expected = {"#h": "kind"}, {"pk", "kind", "created_sk"}
        else:
            index, condition, values = BY_STATUS, "#h = :h", {":h": {"S": f"asset#{status}"}}
            names, expected = {"#h": "status_kind"}, {"pk", "status_kind", "created_sk"}
        request: dict[str, Any] = {"TableName": self.table, "IndexName": index, "KeyConditionExpression": condition,
                                   "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
                                   "ScanIndexForward": False, "Limit": limit}
        if cursor:
            start = _decode_cursor(cursor, expected)
            if _deserialize({k: start[k] for k in expected - {"pk", "created_sk"}}) != \
                    _deserialize({k: values[":h"] for k in expected - {"pk", "created_sk"}}):
                raise PixelFlowError(ErrorCode.INVALID_CURSOR, "The cursor belongs to another listing.")
            request["ExclusiveStartKey"] = start
        response = self.client.query(**request)
        items = [_deserialize(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return items, (_encode_cursor(last) if last and len(items) == limit else None)


def table_definition() -> dict[str, Any]:
    """``create_table`` arguments of the records table (also what the CloudFormation template declares)."""
    projection = {"ProjectionType": "ALL"}
    return {
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": name, "AttributeType": "S"}
                                 for name in ("pk", "kind", "status_kind", "created_sk")],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {"IndexName": BY_CREATED, "Projection": projection,
             "KeySchema": [{"AttributeName": "kind", "KeyType": "HASH"},
                           {"AttributeName": "created_sk", "KeyType": "RANGE"}]},
            {"IndexName": BY_STATUS, "Projection": projection,
             "KeySchema": [{"AttributeName": "status_kind", "KeyType": "HASH"},
                           {"AttributeName": "created_sk", "KeyType": "RANGE"}]},
        ],
    }


# --- what the flow calls ----------------------------------------------------------------------

def record_asset_state(settings: PixelFlowSettings, upload: Upload, status: str, *, progress: float | None = None,
                       manifest: Mapping[str, Any] | None = None, error: PixelFlowError | Mapping[str, Any] | None = None,
                       flow_run_id: str | None = None, records: Records | None = None,
                       playable: bool = False) -> dict[str, Any] | None:
    """Record a state change of ``upload``'s asset (what the transcode flow calls).

    The first write links the asset to the API upload its key belongs to (its ``passthrough``
    and ``upload_id``), and marks that upload ``asset_created``.

    Args:
        settings: The records table, the upload key prefix.
        upload: The upload the asset is made from.
        status: ``preparing``, ``ready`` or ``errored``.
        progress: Percent done while preparing (0 to 100).
        manifest: The published manifest (``ready``).
        error: Why it failed (``errored``): a :class:`PixelFlowError` or ``{"code", "message"}``.
        flow_run_id: The flow run making the asset.
        playable: While preparing: its master playlist is published and plays what is encoded
            so far (a progressive asset, docs/chunks.md). A ready asset is always playable.
        records: The store (default: :meth:`Records.from_settings`).

    Returns:
        The record as written (with ``passthrough`` when the upload had one), or ``None`` when
        the asset was deleted: the caller must not publish it (again).
    """
    records = records or Records.from_settings(settings)
    asset_id = upload.asset_id
    fields: dict[str, Any] = {"progress": progress if status == PREPARING else (100 if status == READY else None),
                              "flow_run_id": flow_run_id, "playable": status == READY or (status == PREPARING and playable)}
    if status == READY and manifest is not None:
        fields.update(asset_fields_from_manifest(manifest))
    fields["errors"] = None
    if status == ERRORED and error is not None:
        fields["errors"] = error.to_dict() if isinstance(error, PixelFlowError) else dict(error)
        fields["errors"].pop("details", None)
    first: dict[str, Any] = {"source": upload.to_dict()}
    upload_record = api_upload(settings, records, upload.key)
    if upload_record is not None:
        first.update(upload_link(upload_record))
    record = records.record_asset(asset_id, status, fields, first=first)
    upload_changed = None
    if record is not None and upload_record is not None and upload_record.get("status") == WAITING \
            and upload_record.get("key") == upload.key:
        upload_changed = records.update_upload(upload_record["id"], {"status": ASSET_CREATED, "asset_id": asset_id},
                                               expect_status=WAITING)
    # Signed webhooks (pixelflow/outbox.py): the events of what was just recorded.
    from pixelflow import outbox, webhooks

    outbox.emit_upload_state(settings, webhooks.UPLOAD_ASSET_CREATED, upload_changed, records)
    outbox.emit_asset_state(settings, record, manifest=manifest, records=records)
    return record


def record_asset_update(settings: PixelFlowSettings, upload: Upload, revision: str, *,
                        manifest: Mapping[str, Any] | None = None, error: Mapping[str, Any] | None = None,
                        records: Records | None = None) -> dict[str, Any] | None:
    """Record a change of a published asset after its run (what the ``attach-captions`` flow
    calls): the new ``manifest``'s fields (its subtitles), or ``error`` (``{code, message}``: a
    caption file sent after the video was refused; the asset stays ``ready`` as it was). Sends
    ``video.asset.updated`` once per ``revision`` of the asset.

    Returns:
        The record as written, or ``None`` when the asset was deleted.
    """
    records = records or Records.from_settings(settings)
    fields: dict[str, Any] = dict(asset_fields_from_manifest(manifest)) if manifest is not None else {}
    fields["errors"] = {k: error[k] for k in ("code", "message")} if error else None
    record = records.record_asset(upload.asset_id, READY, fields, first={"source": upload.to_dict()})
    from pixelflow import outbox, webhooks

    if record:
        outbox.emit_safely(settings, webhooks.ASSET_UPDATED, "asset", record,
                           f"{record.get('created_at', '')}:{revision}", records)
    return record


def api_upload(settings: PixelFlowSettings, records: Records, key: str) -> dict[str, Any] | None:
    """The API upload whose object is ``key`` in the upload bucket, if any."""
    upload_id = upload_id_from_key(key, settings.upload_key_prefix)
    upload_record = records.get_upload(upload_id) if upload_id else None
    return upload_record if upload_record is not None and upload_record.get("key") == key else None


def upload_link(upload_record: Mapping[str, Any]) -> dict[str, Any]:
    """What an asset keeps of the API upload it came from (its first record's ``first`` fields).

    >>> upload_link({"id": "u1", "passthrough": "p", "playback_policy": ["signed"]})
    {'upload_id': 'u1', 'passthrough': 'p', 'playback_policy': 'signed'}
    """
    return {"upload_id": upload_record.get("id"), "passthrough": upload_record.get("passthrough"),
            "playback_policy": upload_policy(upload_record)}


def upload_policy(upload_record: Mapping[str, Any]) -> str | None:
    """The playback policy an API upload chose for its asset (kept as Mux's one-item list).

    >>> upload_policy({"playback_policy": ["signed"]}), upload_policy({})
    ('signed', None)
    """
    chosen = upload_record.get("playback_policy")
    chosen = chosen[0] if isinstance(chosen, list) and chosen else chosen
    return chosen if chosen in PLAYBACK_POLICIES else None


class ProgressRecorder:
    """Feeds an asset's ``progress`` to its record while it is prepared, throttled to one write per
    ``step`` percent and ``interval`` seconds (plus the final one).

    Example:
        >>> writes = []
        >>> recorder = ProgressRecorder(lambda p: writes.append(p), interval=0)
        >>> for p in (1, 5, 12, 15, 30): recorder(p)
        >>> writes
        [12, 30]
    """

    def __init__(self, write, step: float = 10.0, interval: float = 5.0):
        self.write = write
        self.step = step
        self.interval = interval
        self.last_percent = 0.0
        self.last_time = 0.0

    def __call__(self, percent: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (percent - self.last_percent < self.step or now - self.last_time < self.interval):
            return
        self.last_percent, self.last_time = percent, now
        try:
            self.write(percent)
        except Exception:  # noqa: BLE001 - progress is a nicety: never fails an encode
            logger.debug("progress write failed", exc_info=True)
