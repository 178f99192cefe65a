"""Where an asset's objects live, and whether a published asset is whole.

An asset is the folder ``<asset_prefix><asset_id>/`` of the output bucket. Its records (why it
was not published, ``error.json``, and the reconciler's retries, ``retries.json``) are in
``<record_prefix><asset_id>/`` of the output bucket, where uploaders cannot write and which is never
served; a rejected source is kept as ``<quarantine_prefix><asset_id>/source`` in the upload
bucket. Its ``manifest.json`` names every object a client fetches (each rendition's init
segment, segments and playlist, the master playlist, the poster, the storyboard's sheet and
WebVTT file, the MP4 downloads, each subtitles rendition's playlist and WebVTT file) with its
size in bytes. The manifest is written last, and only once every object it names is listed with
that size; an asset whose listing disagrees with its manifest (objects removed by an operator, a
lifecycle rule or a deletion) is *broken*, not ready.

A published asset is write-once. Each attempt of a run writes what it makes into a folder of
its own inside the asset (:func:`attempt_folder`: ``<asset>/<run>-<attempt>/720p/...``,
``.../poster.jpg``), never into another attempt's; the manifest's conditional write
(``If-None-Match``) makes one attempt's objects the asset, and only then is the master
playlist written at the asset's top, as the manifest records it. An attempt that loses removes
what it wrote and the winner does not name; the winner removes what earlier attempts left that
it does not name. So no object a manifest names is ever written
twice, whatever runs race (duplicate events, a run re-run after a missed heartbeat while its
first process still writes, a manual retry), and a retry reuses the renditions an earlier
attempt published where they are. The one exception is a caption file attached after the video
(``tasks/captions.py``): its files go into the attach's own folder, then the manifest is
replaced under ``If-Match`` on its ETag and the master playlist written again from it.

Example:
    >>> layout = AssetLayout.of("0123456789abcdef01234567")
    >>> layout.prefix, layout.manifest_key
    ('assets/0123456789abcdef01234567/', 'assets/0123456789abcdef01234567/manifest.json')
    >>> layout.error_key, layout.kept_source_key
    ('records/0123456789abcdef01234567/error.json', 'quarantine/0123456789abcdef01234567/source')
    >>> layout.relative(layout.key("720p/seg_00001.m4s"))
    '720p/seg_00001.m4s'
    >>> attempt_folder("3f9a2c1d-4e5b-4c3d-9a8b-7c6d5e4f3a2b", 2)
    '3f9a2c1d4e5b-2'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MANIFEST = "manifest.json"
MASTER = "master.m3u8"
POSTER = "poster.jpg"
ERROR_RECORD = "error.json"
RETRY_RECORD = "retries.json"
KEPT_SOURCE = "source"


@dataclass(frozen=True)
class AssetLayout:
    """The keys of one asset's objects.

    Attributes:
        asset_id: The asset's id.
        prefix: The asset's folder in the output bucket, ending in ``/`` (``assets/<asset_id>/``).
        record_prefix: The folder of the asset's records in the output bucket (``error.json``,
            ``retries.json``), ending in ``/`` (``records/<asset_id>/``).
        quarantine_prefix: The folder of the kept copy of a rejected source in the upload bucket,
            ending in ``/`` (``quarantine/<asset_id>/``).
    """

    asset_id: str
    prefix: str
    record_prefix: str = ""
    quarantine_prefix: str = ""

    @classmethod
    def of(cls, asset_id: str, asset_prefix: str = "assets/", quarantine_prefix: str = "quarantine/",
           record_prefix: str = "records/") -> "AssetLayout":
        """The layout of ``asset_id`` under ``asset_prefix``, ``quarantine_prefix`` and
        ``record_prefix`` (the settings ``PIXELFLOW_ASSET_PREFIX``, ``PIXELFLOW_QUARANTINE_PREFIX``
        and ``PIXELFLOW_RECORD_PREFIX``)."""
        return cls(asset_id, f"{asset_prefix}{asset_id}/", f"{record_prefix}{asset_id}/",
                   f"{quarantine_prefix}{asset_id}/")

    def key(self, relative: str) -> str:
        """The key of an object given its path inside the asset (``720p/index.m3u8``)."""
        return f"{self.prefix}{relative}"

    def relative(self, key: str) -> str:
        """The path inside the asset of one of its keys."""
        if not key.startswith(self.prefix):
            raise ValueError(f"{key!r} is not an object of asset {self.asset_id}")
        return key[len(self.prefix):]

    @property
    def manifest_key(self) -> str:
        return self.key(MANIFEST)

    @property
    def master_key(self) -> str:
        return self.key(MASTER)

    @property
    def poster_key(self) -> str:
        return self.key(POSTER)

    @property
    def error_key(self) -> str:
        """The asset's ``error.json`` record (output bucket)."""
        return f"{self.record_prefix}{ERROR_RECORD}"

    @property
    def retries_key(self) -> str:
        """The record of the reconciler's retries of a failed upload (``retries.json``)."""
        return f"{self.record_prefix}{RETRY_RECORD}"

    @property
    def kept_source_key(self) -> str:
        """Where a rejected source is kept (upload bucket)."""
        return f"{self.quarantine_prefix}{KEPT_SOURCE}"


def attempt_folder(flow_run_id: str, attempt: int) -> str:
    """The folder inside the asset where one attempt of one flow run writes what it makes: 12
    hex digits of the run's id and the attempt's number (Prefect's run count)."""
    return f"{flow_run_id.replace('-', '')[:12]}-{int(attempt)}"


def in_folder(folder: str, relative: str) -> str:
    """``relative`` (``720p/index.m3u8``) inside ``folder`` of the asset (none: the asset's top).

    >>> in_folder("3f9a2c1d4e5b-1", "poster.jpg"), in_folder("", "poster.jpg")
    ('3f9a2c1d4e5b-1/poster.jpg', 'poster.jpg')
    """
    return f"{folder}/{relative}" if folder else relative


def rendition_objects(rendition: Mapping[str, Any]) -> dict[str, int | None]:
    """The objects one rendition (a manifest entry or ``RenditionOutput.to_dict()``) names, with
    their sizes (``None`` where the entry predates per-file sizes).

    >>> rendition_objects({"files": ["360p/init.mp4", "360p/index.m3u8"], "file_sizes": [800, 120]})
    {'360p/init.mp4': 800, '360p/index.m3u8': 120}
    >>> rendition_objects({"files": ["360p/init.mp4"]})
    {'360p/init.mp4': None}
    """
    files = list(rendition.get("files") or [])
    sizes = list(rendition.get("file_sizes") or [])
    if len(sizes) != len(files):
        sizes = [None] * len(files)
    return dict(zip(files, sizes))


def manifest_objects(manifest: Mapping[str, Any]) -> dict[str, int | None]:
    """Every object a published manifest names, relative to the asset, with its size when known.

    >>> manifest_objects({"renditions": [{"files": ["360p/a.m4s"], "file_sizes": [5]}],
    ...                   "audio": None, "master_playlist": "master.m3u8", "poster": "poster.jpg",
    ...                   "object_sizes": {"master.m3u8": 90, "poster.jpg": 1000}})
    {'360p/a.m4s': 5, 'master.m3u8': 90, 'poster.jpg': 1000}
    >>> sorted(manifest_objects({"renditions": [], "storyboard": {"image": "storyboard.jpg", "vtt": "storyboard.vtt"}}))
    ['master.m3u8', 'poster.jpg', 'storyboard.jpg', 'storyboard.vtt']
    >>> manifest_objects({"renditions": [], "downloads": [{"file": "downloads/720p.mp4", "size": 9}]})["downloads/720p.mp4"]
    9
    >>> manifest_objects({"renditions": [], "subtitles": [{"file": "subtitles/en/captions.vtt", "size": 40,
    ...                   "playlist": "subtitles/en/index.m3u8", "playlist_size": 120}]})["subtitles/en/index.m3u8"]
    120
    """
    objects: dict[str, int | None] = {}
    for rendition in list(manifest.get("renditions") or []) + ([manifest["audio"]] if manifest.get("audio") else []):
        objects.update(rendition_objects(rendition))
    sizes = manifest.get("object_sizes") or {}
    for download in manifest.get("downloads") or []:
        objects[download["file"]] = download.get("size")
    for subtitles in manifest.get("subtitles") or []:
        objects[subtitles["file"]] = subtitles.get("size")
        objects[subtitles["playlist"]] = subtitles.get("playlist_size")
    storyboard = manifest.get("storyboard") or {}
    for name in (manifest.get("master_playlist") or MASTER, manifest.get("poster", POSTER),  # audio only: no poster
                 storyboard.get("image"), storyboard.get("vtt")):
        if name:
            objects[name] = sizes.get(name)
    return objects


def owners(manifest: Mapping[str, Any], paths: Iterable[str]) -> set[str]:
    """What each of ``paths`` (inside the asset) belongs to in ``manifest``: a rendition's name
    (``720p``, ``audio``), ``downloads``, ``subtitles``, ``storyboard``, ``poster`` or
    ``master``, to redo just that.

    >>> sorted(owners({"renditions": [{"name": "360p", "files": ["r-1/360p/a.m4s"]}], "audio": None,
    ...                "downloads": [{"file": "r-1/downloads/360p.mp4"}], "poster": "r-1/poster.jpg"},
    ...               ["r-1/360p/a.m4s", "r-1/downloads/360p.mp4", "master.m3u8", "r-1/poster.jpg"]))
    ['360p', 'downloads', 'master', 'poster']
    """
    owner: dict[str, str] = {}
    for rendition in list(manifest.get("renditions") or []) + ([manifest["audio"]] if manifest.get("audio") else []):
        owner.update(dict.fromkeys(rendition_objects(rendition), rendition["name"]))
    owner.update({d["file"]: "downloads" for d in manifest.get("downloads") or []})
    for subtitles in manifest.get("subtitles") or []:
        owner.update(dict.fromkeys((subtitles["file"], subtitles["playlist"]), "subtitles"))
    storyboard = manifest.get("storyboard") or {}
    owner.update({name: "storyboard" for name in (storyboard.get("image"), storyboard.get("vtt")) if name})
    owner[manifest.get("master_playlist") or MASTER] = "master"
    if manifest.get("poster", POSTER):
        owner[manifest.get("poster", POSTER)] = "poster"
    return {owner.get(path, path.split("/", 1)[0]) for path in paths}


def missing_objects(expected: Mapping[str, int | None], listed: Mapping[str, int]) -> list[str]:
    """The expected objects that the listing lacks, or lists with another size, sorted.

    Args:
        expected: Path inside the asset -> size in bytes (``None``: any size will do).
        listed: Path inside the asset -> size, from one listing of the asset's prefix.

    >>> missing_objects({"a": 1, "b": 2, "c": None}, {"a": 1, "b": 3, "c": 7})
    ['b']
    >>> missing_objects({"a": 1}, {})
    ['a']
    """
    return sorted(name for name, size in expected.items()
                  if name not in listed or (size is not None and listed[name] != size))


def incomplete_renditions(renditions: Iterable[Mapping[str, Any]], listed: Mapping[str, int]) -> list[str]:
    """Names of the renditions with at least one object missing from ``listed``.

    >>> incomplete_renditions([{"name": "360p", "files": ["360p/a.m4s"], "file_sizes": [5]},
    ...                        {"name": "720p", "files": ["720p/a.m4s"], "file_sizes": [9]}],
    ...                       {"360p/a.m4s": 5})
    ['720p']
    """
    return [r["name"] for r in renditions if missing_objects(rendition_objects(r), listed)]


def publish_fingerprint(output_bucket: str, endpoint: str, prefix: str, ladder: object) -> str:
    """A short hash of everything a published rendition depends on besides the source: where it
    is published (bucket, endpoint, the asset's prefix) and how it is encoded (the whole ladder
    configuration). Results remembered under another fingerprint are never reused.

    >>> a = publish_fingerprint("out", "http://127.0.0.1:5000", "assets/x/", "ladder")
    >>> a == publish_fingerprint("out", "http://127.0.0.1:5001", "assets/x/", "ladder"), len(a)
    (False, 16)
    """
    material = "\x00".join(["pixelflow-publish-v3", output_bucket, endpoint, prefix, repr(ladder)])
    return hashlib.sha256(material.encode()).hexdigest()[:16]
