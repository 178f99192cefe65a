"""The asset's description (``manifest.json``) and the per-rendition summaries it is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any

from pixelflow.core.hls import AudioEntry, SubtitleEntry, VariantEntry, bandwidths, master_playlist, parse_media_playlist
from pixelflow.core.layout import MASTER, POSTER, in_folder
from pixelflow.core.upload import Upload

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class RenditionOutput:
    """One finished rendition (video rung or audio), measured from its files."""

    name: str
    kind: str  # "video" | "audio"
    playlist: str  # path relative to the asset root, e.g. "720p/index.m3u8"
    files: tuple[str, ...]  # every file, relative to the asset root, playlist last
    size: int
    segments: int
    duration: float
    bandwidth: int
    average_bandwidth: int
    codecs: str
    width: int = 0
    height: int = 0
    frame_rate: float = 0.0
    file_sizes: tuple[int, ...] = ()  # size in bytes of each of ``files``, in the same order
    #: The audio's loudness normalisation (:func:`pixelflow.core.loudness.loudness_entry`) as
    #: ``(key, value)`` pairs; empty (and absent from :meth:`to_dict`) when it is off.
    loudness: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The rendition as the manifest states it.

        >>> out = RenditionOutput("audio", "audio", "audio/index.m3u8", (), 0, 0, 0.0, 0, 0, "mp4a.40.2",
        ...                       loudness=(("target_i", -16.0), ("input_i", None)))
        >>> out.to_dict()["loudness"], "loudness" in RenditionOutput.from_dict(out.to_dict()).__dict__
        ({'target_i': -16.0, 'input_i': None}, True)
        >>> "loudness" in RenditionOutput.from_dict({**out.to_dict(), "loudness": None}).to_dict()
        False
        """
        data = asdict(self)
        data["files"] = list(self.files)
        data["file_sizes"] = list(self.file_sizes)
        if self.loudness:
            data["loudness"] = dict(self.loudness)
        else:
            del data["loudness"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RenditionOutput":
        data = dict(data)
        data["files"] = tuple(data.get("files", ()))
        data["file_sizes"] = tuple(data.get("file_sizes", ()))
        data["loudness"] = tuple((data.get("loudness") or {}).items())
        return cls(**data)

    def objects(self) -> dict[str, int]:
        """Every file of the rendition, relative to the asset root, with its size."""
        return dict(zip(self.files, self.file_sizes))

    def placed(self, folder: str) -> "RenditionOutput":
        """The rendition as published in ``folder`` of the asset (its attempt's folder).

        >>> out = RenditionOutput("360p", "video", "360p/index.m3u8", ("360p/init.mp4", "360p/index.m3u8"),
        ...                       1, 1, 2.0, 1, 1, "avc1", file_sizes=(800, 120))
        >>> placed = out.placed("3f9a2c1d4e5b-1")
        >>> placed.playlist, placed.files
        ('3f9a2c1d4e5b-1/360p/index.m3u8', ('3f9a2c1d4e5b-1/360p/init.mp4', '3f9a2c1d4e5b-1/360p/index.m3u8'))
        """
        return replace(self, playlist=in_folder(folder, self.playlist),
                       files=tuple(in_folder(folder, f) for f in self.files))


def summarize_rendition(name: str, kind: str, playlist_text: str, sizes: dict[str, int], codecs: str,
                        width: int = 0, height: int = 0, frame_rate: float = 0.0) -> RenditionOutput:
    """Measure a rendition from its media playlist and the sizes of its files.

    Args:
        name: Folder name of the rendition (``"720p"``, ``"audio"``).
        kind: ``"video"`` or ``"audio"``.
        playlist_text: The rendition's ``index.m3u8``.
        sizes: Size in bytes of each file in the folder, by file name.
        codecs: RFC 6381 codec string.
    """
    playlist = parse_media_playlist(playlist_text)
    seg_sizes = [sizes[uri] for uri, _ in playlist.segments]
    durations = [d for _, d in playlist.segments]
    init_size = sizes.get(playlist.init, 0) if playlist.init else 0
    peak, average = bandwidths(seg_sizes, durations, init_size)
    files = ([playlist.init] if playlist.init else []) + [uri for uri, _ in playlist.segments] + ["index.m3u8"]
    return RenditionOutput(
        name=name,
        kind=kind,
        playlist=f"{name}/index.m3u8",
        files=tuple(f"{name}/{f}" for f in files),
        file_sizes=tuple(sizes[f] for f in files),
        size=sum(seg_sizes) + init_size,
        segments=len(seg_sizes),
        duration=round(playlist.duration, 3),
        bandwidth=peak,
        average_bandwidth=average,
        codecs=codecs,
        width=width,
        height=height,
        frame_rate=round(frame_rate, 3),
    )


def variant_entry(r: RenditionOutput) -> VariantEntry:
    return VariantEntry(r.playlist, r.bandwidth, r.average_bandwidth, r.width, r.height, r.codecs, r.frame_rate)


def audio_entry(r: RenditionOutput) -> AudioEntry:
    return AudioEntry(r.playlist, r.bandwidth, r.average_bandwidth, r.codecs)


def build_manifest(asset_id: str, source: Upload, probe_summary: dict[str, Any], videos: list[RenditionOutput],
                   audio: RenditionOutput | None, ladder: str, flow_run_id: str | None = None,
                   created_at: datetime | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``manifest.json``: everything a client needs to know about a ready asset."""
    created = (created_at or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    renditions = sorted(videos, key=lambda r: (r.height * r.width, r.bandwidth))
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "asset_id": asset_id,
        "status": "ready",
        "created_at": created,
        "source": source.to_dict(),
        "probe": probe_summary,
        "duration": probe_summary.get("duration"),
        "master_playlist": MASTER,
        "poster": POSTER,
        "ladder": ladder,
        "renditions": [r.to_dict() for r in renditions],
        "audio": audio.to_dict() if audio else None,
        "flow_run_id": flow_run_id,
    }
    manifest.update(extra or {})
    return manifest


def master_from_manifest(manifest: dict[str, Any]) -> str:
    """The master playlist of a manifest: a pure function of it, so that whichever run writes
    it (the one whose manifest won, or a later one repairing it) writes the same bytes. Variants
    go from the smallest rendition up; the subtitles group is the manifest's, in its order.

    >>> print(master_from_manifest({"renditions": [{"name": "360p", "kind": "video", "playlist": "r-1/360p/index.m3u8",
    ...     "files": [], "size": 1, "segments": 1, "duration": 2.0, "bandwidth": 900000, "average_bandwidth": 700000,
    ...     "codecs": "avc1.64001e", "width": 640, "height": 360, "frame_rate": 30.0}], "audio": None}), end="")
    #EXTM3U
    #EXT-X-VERSION:7
    #EXT-X-INDEPENDENT-SEGMENTS
    #EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=700000,RESOLUTION=640x360,CODECS="avc1.64001e",FRAME-RATE=30.000
    r-1/360p/index.m3u8
    """
    videos = [RenditionOutput.from_dict(r) for r in manifest.get("renditions") or []]
    audio = RenditionOutput.from_dict(manifest["audio"]) if manifest.get("audio") else None
    subtitles = [SubtitleEntry(s["playlist"], s["language"], s["name"], default=bool(s.get("default")),
                               group_id=s.get("group_id", "subs"))
                 for s in manifest.get("subtitles") or []]
    return master_playlist([variant_entry(v) for v in videos], audio_entry(audio) if audio else None, subtitles)


#: Content types of the files a player fetches from a published asset, by suffix (what the
#: player server and the API serve for playback; ``manifest.json`` is not one of them).
PLAYBACK_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".ts": "video/mp2t",
    ".aac": "audio/aac",
    ".vtt": "text/vtt; charset=utf-8",
    ".jpg": "image/jpeg",
}

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4a": "audio/mp4",
    ".vtt": "text/vtt; charset=utf-8",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".jpg": "image/jpeg",
    ".json": "application/json",
}
#: Segments, init segments and images never change once published (an asset is immutable);
#: playlists, the storyboard's WebVTT and the manifest are cached briefly so a re-published
#: asset is picked up.
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=60"
GROWING = "public, max-age=1"


def object_headers(name: str, growing: bool = False) -> dict[str, str]:
    """``Content-Type`` and ``Cache-Control`` for a published file; a playlist that is still
    ``growing`` (a progressive asset's, docs/chunks.md) is cached a second at most, as a live
    playlist is.

    >>> object_headers("720p/seg_00001.m4s")
    {'ContentType': 'video/iso.segment', 'CacheControl': 'public, max-age=31536000, immutable'}
    >>> object_headers("master.m3u8")["CacheControl"]
    'public, max-age=60'
    >>> object_headers("720p/index.m3u8", growing=True)["CacheControl"]
    'public, max-age=1'
    """
    suffix = name[name.rfind("."):] if "." in name else ""
    content_type = CONTENT_TYPES.get(suffix, "application/octet-stream")
    cache = GROWING if growing else SHORT if suffix in (".m3u8", ".json", ".vtt") else IMMUTABLE
    return {"ContentType": content_type, "CacheControl": cache}
