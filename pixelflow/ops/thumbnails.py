"""Thumbnails at time t, made on request from a published rendition (what the API's and the
player server's ``/assets/<asset_id>/thumbnail.<jpg|webp>`` answer).

Each request reads the asset's manifest (an unpublished or deleted asset is 404 even when its
pictures are still cached), checks it (:func:`pixelflow.core.thumbnails.plan_thumbnail`), and
answers from an in-process LRU of recent images when it can. Otherwise it fetches the chosen
rendition's playlist, its init segment and the one segment covering the time from the output
bucket into a temporary folder, and runs FFmpeg on those local files only
(:func:`pixelflow.core.ffmpeg_args.thumbnail_args`) through the sandboxed runner
(:func:`pixelflow.pipeline.ffmpeg.run_ffmpeg`: minimal environment, no network, a memory limit,
``PIXELFLOW_THUMBNAIL_TIMEOUT_SECONDS``). At most ``PIXELFLOW_THUMBNAIL_CONCURRENCY`` such
processes run at once per process; a request beyond them is ``thumbnails_busy`` (503).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from botocore.exceptions import ClientError

from pixelflow.aws import is_missing
from pixelflow.core.ffmpeg_args import FFMPEG, thumbnail_args
from pixelflow.core.hls import parse_media_playlist
from pixelflow.core.manifest import IMMUTABLE
from pixelflow.core.thumbnails import ThumbnailPlan, check_format, plan_thumbnail, segment_at
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.ops import assets as s3_assets
from pixelflow.pipeline.ffmpeg import child_env, run_ffmpeg
from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.ops.thumbnails")

#: Seconds a client is told to wait (``Retry-After``) when every FFmpeg slot is taken.
RETRY_AFTER = 1
#: The largest playlist or segment fetched for a thumbnail, in bytes.
MAX_OBJECT_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class Thumbnail:
    """An image to answer with."""

    body: bytes
    content_type: str

    def headers(self) -> dict[str, str]:
        """Its response headers: an asset never changes, so neither does its picture at t."""
        return {"Content-Type": self.content_type, "Cache-Control": IMMUTABLE, "Access-Control-Allow-Origin": "*"}


class ImageCache:
    """The most recently used images, at most ``max_bytes`` of them in all (thread-safe).

    >>> cache = ImageCache(10)
    >>> cache.put("a", b"12345"); cache.put("b", b"12345"); cache.get("a") is not None
    True
    >>> cache.put("c", b"123"); cache.get("b") is None, cache.size  # "b" was the least recent
    (True, 8)
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Any, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.size -= len(old) if old is not None else 0
            self._items[key] = value
            self.size += len(value)
            while self.size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.size -= len(evicted)


class ThumbnailService:
    """Makes and caches the thumbnails of one process (one per API app or player server).

    Attributes:
        ffmpeg_runs: How many FFmpeg processes it started (cache hits start none).
        slots: The bounded semaphore of concurrent FFmpeg processes.
    """

    def __init__(self, settings: PixelFlowSettings, s3):
        self.settings = settings
        self.s3 = s3
        self.cache = ImageCache(settings.thumbnail_cache_bytes)
        self.slots = threading.BoundedSemaphore(settings.thumbnail_concurrency)
        self.ffmpeg_runs = 0
        self._count = threading.Lock()

    def get(self, asset_id: str, fmt: str, query: Mapping[str, str]) -> Thumbnail:
        """The thumbnail ``thumbnail.<fmt>?<query>`` of ``asset_id``.

        Raises:
            PixelFlowError: the codes of :func:`plan_thumbnail`, ``asset_not_found`` (no published
                asset), ``thumbnails_busy``, ``thumbnails_unavailable`` (no FFmpeg here),
                ``thumbnail_failed``, ``storage_error``.
        """
        check_format(fmt)
        manifest = s3_assets.read_manifest(asset_id, self.settings, self.s3) if s3_assets.is_asset_id(asset_id) else None
        if manifest is None:
            raise PixelFlowError(ErrorCode.ASSET_NOT_FOUND, f"No published asset {asset_id[:64]}.")
        plan = plan_thumbnail(manifest, fmt, query, max_width=self.settings.thumbnail_max_width)
        key = plan.cache_key(asset_id)
        cached = self.cache.get(key)
        if cached is None:
            cached = self._make(asset_id, plan)
            self.cache.put(key, cached)
        return Thumbnail(cached, plan.content_type)

    def _make(self, asset_id: str, plan: ThumbnailPlan) -> bytes:
        if shutil.which(FFMPEG, path=child_env()["PATH"]) is None:
            raise PixelFlowError(ErrorCode.THUMBNAILS_UNAVAILABLE, "This server has no FFmpeg to make thumbnails "
                                 "with; run `pixelflow api` where FFmpeg is installed (see docs/aws.md).")
        if not self.slots.acquire(blocking=False):
            raise PixelFlowError(ErrorCode.THUMBNAILS_BUSY, "Too many thumbnails are being made right now; retry "
                                 "shortly.", {"retry_after": RETRY_AFTER})
        try:
            with self._count:
                self.ffmpeg_runs += 1
            return self._render(asset_id, plan)
        finally:
            self.slots.release()

    def _fetch(self, layout, relative: str) -> bytes:
        try:
            obj = self.s3.get_object(Bucket=self.settings.output_bucket, Key=layout.key(relative))
        except ClientError as exc:
            if is_missing(exc):
                raise PixelFlowError(ErrorCode.NOT_FOUND, f"The asset's {relative} is missing.") from None
            raise
        with obj["Body"] as body:
            if obj.get("ContentLength", 0) > MAX_OBJECT_BYTES:
                raise PixelFlowError(ErrorCode.THUMBNAIL_FAILED, f"The asset's {relative} is too large to read.")
            return body.read()

    def _render(self, asset_id: str, plan: ThumbnailPlan) -> bytes:
        layout = self.settings.layout(asset_id)
        folder = str(plan.rendition["playlist"]).rsplit("/", 1)[0]
        playlist = parse_media_playlist(self._fetch(layout, str(plan.rendition["playlist"])).decode("utf-8", "replace"))
        if not playlist.segments or not playlist.init:
            raise PixelFlowError(ErrorCode.THUMBNAIL_FAILED, "The rendition's playlist names no segment.")
        pick = segment_at(playlist, plan.time, float(plan.rendition.get("frame_rate") or 30.0))
        scratch = Path(self.settings.scratch_dir)
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="thumbnail-", dir=scratch) as work:
            joined, out = Path(work) / "joined.mp4", Path(work) / f"thumbnail.{plan.format}"
            with open(joined, "wb") as target:
                for name in (playlist.init, pick.uri):
                    target.write(self._fetch(layout, f"{folder}/{name}"))
            args = thumbnail_args(str(joined), pick.offset, plan.width, plan.height, plan.format, str(out))
            seconds = self.settings.thumbnail_timeout_seconds
            try:
                run_ffmpeg(args, timeout=seconds, log=logger, memory_bytes=self.settings.thumbnail_memory_bytes or None,
                           sandbox=self.settings.ffmpeg_sandbox,
                           timeout_error=lambda limit: PixelFlowError(ErrorCode.THUMBNAIL_FAILED, "FFmpeg did not "
                                                                      f"finish within {limit:.0f} s."))
            except PixelFlowError as error:
                if error.code == ErrorCode.THUMBNAIL_FAILED:
                    raise
                raise PixelFlowError(ErrorCode.THUMBNAIL_FAILED, "The thumbnail could not be made.",
                                     {"cause": error.code.value}) from None
            if not out.exists() or out.stat().st_size == 0:
                raise PixelFlowError(ErrorCode.THUMBNAIL_FAILED, "FFmpeg made no picture at that time.")
            return out.read_bytes()


_LOCK = threading.Lock()


def service_of(holder: Any, settings: PixelFlowSettings, s3) -> ThumbnailService:
    """The one :class:`ThumbnailService` of ``holder`` (an app's ``state``, a server), made on first use."""
    with _LOCK:
        found = getattr(holder, "thumbnails", None)
        if found is None:
            found = ThumbnailService(settings, s3)
            holder.thumbnails = found
        return found


def error_headers(error: PixelFlowError) -> dict[str, str]:
    """Extra headers of an error answer: ``Retry-After`` when busy."""
    return {"Retry-After": str(RETRY_AFTER)} if error.code == ErrorCode.THUMBNAILS_BUSY else {}
