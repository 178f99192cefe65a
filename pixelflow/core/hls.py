"""HLS playlists: read media playlists, measure bandwidth, write the master playlist."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MediaPlaylist:
    init: str | None
    segments: list[tuple[str, float]]  # (uri, duration)
    target_duration: float

    @property
    def duration(self) -> float:
        return sum(d for _, d in self.segments)


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Parse an HLS media playlist (the subset FFmpeg's HLS muxer writes).

    >>> p = parse_media_playlist('#EXTM3U\\n#EXT-X-TARGETDURATION:4\\n#EXT-X-MAP:URI="init.mp4"\\n#EXTINF:4.000000,\\nseg_00000.m4s\\n#EXTINF:1.5,\\nseg_00001.m4s\\n#EXT-X-ENDLIST\\n')
    >>> p.init, len(p.segments), p.duration
    ('init.mp4', 2, 5.5)
    """
    init = None
    segments: list[tuple[str, float]] = []
    target = 0.0
    pending: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = float(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MAP:"):
            for part in line.split(":", 1)[1].split(","):
                name, _, value = part.partition("=")
                if name.strip() == "URI":
                    init = value.strip().strip('"')
        elif line.startswith("#EXTINF:"):
            pending = float(line.split(":", 1)[1].split(",")[0])
        elif not line.startswith("#"):
            if pending is None:
                raise ValueError(f"segment {line!r} has no #EXTINF")
            segments.append((line, pending))
            pending = None
    return MediaPlaylist(init=init, segments=segments, target_duration=target)


def event_playlist(text: str, *, until: float | None = None, ended: bool = True, target: int = 0) -> str:
    """A VOD media playlist as an ``EVENT`` playlist: what a progressive asset publishes while
    its chunks are encoded (a playlist that only grows), and, with ``ended``, closed with
    ``#EXT-X-ENDLIST`` once the asset is complete.

    Args:
        text: A media playlist (FFmpeg's, or :func:`pixelflow.core.chunks.stitch_rendition`'s).
        until: Keep only the segments that start before this time (seconds, to the
            millisecond), the rest not yet published; ``None`` keeps every segment.
        ended: Close the playlist (``#EXT-X-ENDLIST``): no segment will be added.
        target: The least ``EXT-X-TARGETDURATION``: an EVENT playlist keeps the one it was first
            published with, so each version states the planned segment length at least.

    >>> text = ('#EXTM3U\\n#EXT-X-VERSION:7\\n#EXT-X-TARGETDURATION:4\\n#EXT-X-PLAYLIST-TYPE:VOD\\n'
    ...         '#EXT-X-MAP:URI="init.mp4"\\n#EXTINF:4.0,\\ns0.m4s\\n#EXTINF:4.0,\\ns1.m4s\\n#EXTINF:1.5,\\ns2.m4s\\n'
    ...         '#EXT-X-ENDLIST\\n')
    >>> print(event_playlist(text, until=5.0, ended=False, target=5), end="")
    #EXTM3U
    #EXT-X-VERSION:7
    #EXT-X-TARGETDURATION:5
    #EXT-X-PLAYLIST-TYPE:EVENT
    #EXT-X-MAP:URI="init.mp4"
    #EXTINF:4.0,
    s0.m4s
    #EXTINF:4.0,
    s1.m4s
    >>> event_playlist(text).splitlines()[-3:]
    ['#EXTINF:1.5,', 's2.m4s', '#EXT-X-ENDLIST']
    """
    lines: list[str] = []
    start = 0.0
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line == "#EXT-X-ENDLIST":
            continue
        if line.startswith("#EXT-X-TARGETDURATION:"):
            line = f"#EXT-X-TARGETDURATION:{max(int(float(line.split(':', 1)[1])), target)}"
        elif line.startswith("#EXT-X-PLAYLIST-TYPE:"):
            line = "#EXT-X-PLAYLIST-TYPE:EVENT"
        if line.startswith("#EXTINF:"):
            pending.append(line)
            duration = float(line.split(":", 1)[1].split(",")[0])
            continue
        if pending and not line.startswith("#"):  # a segment: kept if it starts before ``until``
            if until is None or start < until - 1e-3:  # (to the millisecond: summed durations drift)
                lines += pending + [line]
            start += duration
            pending = []
            continue
        if pending:  # a tag between #EXTINF and its URI belongs to the segment
            pending.append(line)
            continue
        lines.append(line)
    if not any(line.startswith("#EXT-X-PLAYLIST-TYPE:") for line in lines):
        lines.insert(1, "#EXT-X-PLAYLIST-TYPE:EVENT")
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def bandwidths(segment_sizes: list[int], durations: list[float], init_size: int = 0) -> tuple[int, int]:
    """Peak and average bits per second of a rendition, measured from its segments.

    ``BANDWIDTH`` must be at least the peak segment bitrate; ``AVERAGE-BANDWIDTH`` is the
    average over the whole rendition.

    >>> bandwidths([1000, 3000], [4.0, 4.0])
    (6000, 4000)
    """
    if not segment_sizes:
        return 0, 0
    peak = max(size * 8 / max(duration, 0.001) for size, duration in zip(segment_sizes, durations))
    total = sum(segment_sizes) + init_size
    average = total * 8 / max(sum(durations), 0.001)
    return int(math.ceil(peak)), int(math.ceil(average))


H264_PROFILES = {"baseline": 0x42, "constrained baseline": 0x42, "main": 0x4D, "high": 0x64, "high 10": 0x6E}
H264_CONSTRAINTS = {"constrained baseline": 0xE0, "baseline": 0xC0, "main": 0x40, "high": 0x00, "high 10": 0x00}


def avc1_codec(profile: str, level: int) -> str:
    """RFC 6381 codec string for H.264.

    >>> avc1_codec("High", 31)
    'avc1.64001f'
    >>> avc1_codec("Constrained Baseline", 30)
    'avc1.42e01e'
    """
    name = profile.strip().lower()
    return f"avc1.{H264_PROFILES.get(name, 0x64):02x}{H264_CONSTRAINTS.get(name, 0):02x}{int(level):02x}"


def avc1_from_init(data: bytes) -> str | None:
    """RFC 6381 codec string read from the ``avcC`` box of an fMP4 init segment: profile,
    constraint flags and level exactly as the encoder wrote them.

    >>> avc1_from_init(bytes.fromhex("00000000") + b"avcC" + bytes.fromhex("0164001fff"))
    'avc1.64001f'
    """
    at = data.find(b"avcC")
    if at < 0 or len(data) < at + 8:
        return None
    profile, constraints, level = data[at + 5], data[at + 6], data[at + 7]
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


AAC_LC = "mp4a.40.2"


@dataclass(frozen=True)
class VariantEntry:
    uri: str
    bandwidth: int
    average_bandwidth: int
    width: int
    height: int
    codecs: str
    frame_rate: float


@dataclass(frozen=True)
class AudioEntry:
    uri: str
    bandwidth: int
    average_bandwidth: int
    codecs: str = AAC_LC
    group_id: str = "audio"
    name: str = "Default"
    language: str | None = None


@dataclass(frozen=True)
class SubtitleEntry:
    """One subtitles rendition of the master playlist (a WebVTT media playlist)."""

    uri: str
    language: str
    name: str
    default: bool = False
    group_id: str = "subs"


def master_playlist(variants: list[VariantEntry], audio: AudioEntry | None,
                    subtitles: list[SubtitleEntry] | tuple = ()) -> str:
    """The master playlist: every rendition, lowest first, with the attributes players need to
    pick one (bandwidth counts the audio rendition too), and the subtitles group, when there are
    captions, named on every variant.

    >>> text = master_playlist([VariantEntry("360p/index.m3u8", 900000, 700000, 640, 360, "avc1.64001e", 30.0)],
    ...                        AudioEntry("audio/index.m3u8", 140000, 130000))
    >>> 'BANDWIDTH=1040000,AVERAGE-BANDWIDTH=830000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2"' in text
    True
    """
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if not variants:
        return audio_only_master_playlist(audio, lines)
    if audio is not None:
        attrs = [f'TYPE=AUDIO', f'GROUP-ID="{audio.group_id}"', f'NAME="{audio.name}"']
        if audio.language:
            attrs.append(f'LANGUAGE="{audio.language}"')
        attrs += ["DEFAULT=YES", "AUTOSELECT=YES", 'CHANNELS="2"', f'URI="{audio.uri}"']
        lines.append("#EXT-X-MEDIA:" + ",".join(attrs))
    for sub in subtitles:
        lines.append(f'#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="{sub.group_id}",LANGUAGE="{sub.language}",'
                     f'NAME="{sub.name}",DEFAULT={"YES" if sub.default else "NO"},AUTOSELECT=YES,URI="{sub.uri}"')
    for v in sorted(variants, key=lambda item: item.bandwidth):
        bandwidth = v.bandwidth + (audio.bandwidth if audio else 0)
        average = v.average_bandwidth + (audio.average_bandwidth if audio else 0)
        codecs = v.codecs + (f",{audio.codecs}" if audio else "")
        attrs = [
            f"BANDWIDTH={bandwidth}",
            f"AVERAGE-BANDWIDTH={average}",
            f"RESOLUTION={v.width}x{v.height}",
            f'CODECS="{codecs}"',
            f"FRAME-RATE={v.frame_rate:.3f}",
        ]
        if audio:
            attrs.append(f'AUDIO="{audio.group_id}"')
        if subtitles:
            attrs.append(f'SUBTITLES="{subtitles[0].group_id}"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


def audio_only_master_playlist(audio: AudioEntry | None, head: list[str]) -> str:
    """The master playlist of an audio-only asset: the audio rendition as its one variant.

    >>> print(master_playlist([], AudioEntry("audio/index.m3u8", 140000, 130000)).splitlines()[-2:])
    ['#EXT-X-STREAM-INF:BANDWIDTH=140000,AVERAGE-BANDWIDTH=130000,CODECS="mp4a.40.2"', 'audio/index.m3u8']
    """
    if audio is None:
        raise ValueError("an asset needs a video or an audio rendition")
    return "\n".join(head + [f'#EXT-X-STREAM-INF:BANDWIDTH={audio.bandwidth},AVERAGE-BANDWIDTH={audio.average_bandwidth},'
                              f'CODECS="{audio.codecs}"', audio.uri]) + "\n"


def parse_master_playlist(text: str) -> list[dict[str, str]]:
    """Variant attributes and URIs of a master playlist (for tests, the CLI and the player)."""
    variants = []
    pending: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = _attributes(line.split(":", 1)[1])
        elif line and not line.startswith("#") and pending is not None:
            pending["URI"] = line
            variants.append(pending)
            pending = None
    return variants


def _attributes(text: str) -> dict[str, str]:
    result, key, value, in_quotes, reading_key = {}, "", "", False, True
    for char in text + ",":
        if reading_key:
            if char == "=":
                reading_key = False
            else:
                key += char
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "," and not in_quotes:
            result[key.strip()] = value
            key, value, reading_key = "", "", True
        else:
            value += char
    return result
