"""Captions and subtitles: WebVTT or SRT files beside an upload, validated, converted to WebVTT
and published as an HLS subtitles rendition group.

A caption file for the upload ``videos/talk.mp4`` is its *sidecar* ``videos/talk.<language>.vtt``
(or ``.srt``): the same key without the video's extension, a language tag
(:mod:`pixelflow.core.languages`) and the format. Each becomes ``subtitles/<language>/captions.vtt``
(cue timings and cue text only: no identifiers, settings, notes, styles or regions; only the
``<b>``, ``<i>`` and ``<u>`` tags kept, everything else escaped) and a VOD media playlist
``subtitles/<language>/index.m3u8`` with that one file as its only segment, lasting the asset.
A file that is not UTF-8 text, too large, without cues, with too many, with a malformed or
reversed timestamp, or with a cue starting after the video ends, is rejected with
``invalid_captions`` (``details["reason"]`` says which).

Example:
    >>> cues = parse_captions(b"1\\n00:00:01,000 --> 00:00:02,500\\nHello <font color=red>world</font> & co\\n",
    ...                       "srt", duration=10, name="talk.en.srt")
    >>> print(webvtt(cues), end="")
    WEBVTT
    X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000
    <BLANKLINE>
    00:00:01.000 --> 00:00:02.500
    Hello world &amp; co
    >>> sidecar_of("videos/talk.mp4", "videos/talk.en.vtt"), sidecar_of("videos/talk.mp4", "videos/talk.v2.en.vtt")
    (('en', 'vtt'), None)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pixelflow.core.hls import SubtitleEntry
from pixelflow.core.languages import language_name, language_tag, looks_like_tag
from pixelflow.errors import ErrorCode, PixelFlowError

FORMATS = ("vtt", "srt")
#: The encoded segments' timeline starts at 0 (FFmpeg's fMP4 HLS muxer, first decode time 0):
#: the WebVTT files map their local time 0 to it, so hls.js and Safari align cues with the video.
TIMESTAMP_MAP = "X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000"
#: How long after the end of the video a cue may start (rounding of the two timelines).
END_SLACK_SECONDS = 1.0
GROUP_ID = "subs"

_VTT_TIME = re.compile(r"^(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})$")
_SRT_TIME = re.compile(r"^(\d{1,3}):([0-5]\d):([0-5]\d)[,.](\d{3})$")
_TIMING = re.compile(r"^(\S+)[ \t]+-->[ \t]+(\S+)(?:[ \t]+.*)?$")
_HEADER = re.compile(r"^WEBVTT(?:[ \t].*)?$")
_SKIPPED_BLOCK = re.compile(r"^(?:NOTE|STYLE|REGION)(?:[ \t].*)?$")
_TAG = re.compile(r"(<[^<>]*>)")
_KEPT_TAGS = {"<b>", "</b>", "<i>", "</i>", "<u>", "</u>"}
_ENTITY = re.compile(r"&(?:amp|lt|gt|lrm|rlm|nbsp);")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Cue:
    """One caption: from ``start`` to ``end`` seconds, its text already safe WebVTT cue text."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Captions:
    """One language's captions, ready to publish.

    Attributes:
        language: The canonical language tag (``en``, ``pt-BR``).
        name: What players show (``English``).
        source_key: The caption object's key in the upload bucket.
        vtt: The WebVTT file to publish.
        source_etag: The caption object's ETag (which revision of it was read).
    """

    language: str
    name: str
    source_key: str
    vtt: str
    source_etag: str = ""

    @property
    def file(self) -> str:
        return f"subtitles/{self.language}/captions.vtt"

    @property
    def playlist(self) -> str:
        return f"subtitles/{self.language}/index.m3u8"

    def files(self, duration: float) -> dict[str, bytes]:
        """The objects to publish, by path inside the asset."""
        return {self.file: self.vtt.encode(), self.playlist: subtitle_playlist(duration).encode()}

    def entry(self, duration: float, default: bool) -> dict[str, Any]:
        """The manifest's entry: language, name, files and their sizes, the source key."""
        files = self.files(duration)
        return {"language": self.language, "name": self.name, "default": default, "file": self.file,
                "size": len(files[self.file]), "playlist": self.playlist, "playlist_size": len(files[self.playlist]),
                "source_key": self.source_key, "source_etag": self.source_etag}


def invalid(name: str, reason: str, message: str, line: int | None = None) -> PixelFlowError:
    """The ``invalid_captions`` rejection of caption file ``name``."""
    details: dict[str, Any] = {"file": name, "reason": reason}
    if line is not None:
        details["line"] = line
        message = f"{message} (line {line})"
    return PixelFlowError(ErrorCode.INVALID_CAPTIONS, f"Caption file {name}: {message}.", details)


# --- keys ----------------------------------------------------------------------------------------

def is_caption_key(key: str) -> bool:
    """Whether an object is a caption file (by its extension): never a video of its own.

    >>> is_caption_key("videos/talk.en.vtt"), is_caption_key("a/b.SRT"), is_caption_key("talk.mp4")
    (True, True, False)
    """
    return key.rsplit(".", 1)[-1].lower() in FORMATS and "." in key.rsplit("/", 1)[-1]


def _stem(video_key: str) -> str:
    folder, _, name = video_key.rpartition("/")
    name = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{folder}/{name}" if folder else name


def sidecar_prefix(video_key: str) -> str:
    """The prefix under which a video's sidecars are listed.

    >>> sidecar_prefix("videos/talk.mp4"), sidecar_prefix("talk")
    ('videos/talk.', 'talk.')
    """
    return _stem(video_key) + "."


def sidecar_key(video_key: str, language: str, fmt: str = "vtt") -> str:
    """The key of a video's caption file in ``language``.

    >>> sidecar_key("uploads/abc/talk.mp4", "en")
    'uploads/abc/talk.en.vtt'
    """
    return f"{sidecar_prefix(video_key)}{language}.{fmt}"


def sidecar_of(video_key: str, key: str) -> tuple[str, str] | None:
    """``(language as written, format)`` when ``key`` is a sidecar of ``video_key``: the video's
    stem, one part shaped like a language tag, ``.vtt`` or ``.srt``. Anything else beside the
    video (``talk.v2.mp4``, ``talk.final.vtt``, another video's sidecar) is not its sidecar."""
    prefix = sidecar_prefix(video_key)
    if not key.startswith(prefix) or not is_caption_key(key):
        return None
    middle, _, fmt = key[len(prefix):].rpartition(".")
    if not looks_like_tag(middle):
        return None
    return middle, fmt.lower()


def caption_videos(caption_key: str, keys: list[str]) -> list[str]:
    """The videos among ``keys`` that ``caption_key`` is a sidecar of (usually one: ``talk.mp4``
    for ``talk.en.vtt``; the video's extension is not known from the caption's name).

    >>> caption_videos("v/talk.en.vtt", ["v/talk.mp4", "v/talk.fr.vtt", "v/talk.v2.mp4", "v/talker.mp4"])
    ['v/talk.mp4']
    >>> caption_videos("v/talk.v2.en.vtt", ["v/talk.mp4", "v/talk.v2.mp4"])
    ['v/talk.v2.mp4']
    """
    return sorted(k for k in keys if k != caption_key and not is_caption_key(k) and sidecar_of(k, caption_key))


def videos_prefix(caption_key: str) -> str:
    """The prefix under which every video a caption file may belong to is listed: its name up
    to the first dot.

    >>> videos_prefix("v/talk.v2.en.vtt")
    'v/talk.'
    """
    folder, _, name = caption_key.rpartition("/")
    head = name.split(".", 1)[0] + "."
    return f"{folder}/{head}" if folder else head


def caption_revision(key: str, etag: str | None) -> str:
    """How a manifest remembers one revision of a caption object it took into account.

    >>> caption_revision("v/talk.en.vtt", '"abc"')
    'v/talk.en.vtt@abc'
    """
    return f"{key}@{(etag or '').strip().strip(chr(34))}"


def captions_read(manifest: dict[str, Any]) -> set[str]:
    """Every caption revision a published asset took into account: those it publishes and those
    later ones replaced (``captions_read``), so that a replaced file is never attached again.

    >>> sorted(captions_read({"subtitles": [{"source_key": "t.en.vtt", "source_etag": "e2"}],
    ...                       "captions_read": ["t.en.vtt@e1"]}))
    ['t.en.vtt@e1', 't.en.vtt@e2']
    """
    return set(manifest.get("captions_read") or []) | {
        caption_revision(s["source_key"], s.get("source_etag")) for s in manifest.get("subtitles") or []
        if s.get("source_key")}


def merge_subtitles(existing: list[dict[str, Any]], added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The subtitles of an asset once ``added`` entries are attached: a language it has is
    replaced in place (keeping whether it is the default), a new one is appended; the first
    language is the default when the asset had none.

    >>> merged = merge_subtitles([{"language": "en", "default": True, "file": "a"}],
    ...                          [{"language": "fr", "default": True}, {"language": "en", "default": False, "file": "b"}])
    >>> [(s["language"], s["default"], s.get("file")) for s in merged]
    [('en', True, 'b'), ('fr', False, None)]
    """
    merged = [dict(s) for s in existing]
    for entry in added:
        at = next((i for i, s in enumerate(merged) if s["language"] == entry["language"]), None)
        if at is None:
            merged.append({**entry, "default": not merged})
        else:
            merged[at] = {**entry, "default": bool(merged[at].get("default"))}
    return merged


def caption_language(tag: str, name: str) -> str:
    """The canonical form of a caption file's language tag, or ``invalid_captions``
    (``unknown_language``)."""
    canonical = language_tag(tag)
    if canonical is None:
        raise invalid(name, "unknown_language", f"{tag!r} is not a known language tag (ISO 639-1, e.g. en, pt-BR)")
    return canonical


# --- parsing -------------------------------------------------------------------------------------

def _seconds(stamp: str, fmt: str) -> float | None:
    match = (_VTT_TIME if fmt == "vtt" else _SRT_TIME).match(stamp)
    if not match:
        return None
    hours, minutes, secs, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000


def _stamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"


def cue_text(line: str) -> str:
    """One line of cue text made safe: ``<b>``, ``<i>``, ``<u>`` kept, other tags dropped,
    ``&``, ``<`` and ``>`` escaped, control characters removed.

    >>> cue_text('<i>Hi</i> <script>x</script> a->b & &amp;')
    '<i>Hi</i> x a-&gt;b &amp; &amp;'
    """
    out = []
    for token in _TAG.split(_CONTROL.sub("", line)):
        if _TAG.fullmatch(token):
            if token.lower().replace(" ", "") in _KEPT_TAGS:
                out.append(token.lower().replace(" ", ""))
            continue
        escaped, at = [], 0
        for entity in _ENTITY.finditer(token):
            escaped.append(token[at:entity.start()].replace("&", "&amp;"))
            escaped.append(entity.group())
            at = entity.end()
        escaped.append(token[at:].replace("&", "&amp;"))
        out.append("".join(escaped).replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(out).strip()


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """The blocks of a text (runs of lines between blank lines), each with its first line number."""
    blocks, current, first = [], [], 0
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            if not current:
                first = number
            current.append(line.rstrip())
        elif current:
            blocks.append((first, current))
            current = []
    if current:
        blocks.append((first, current))
    return blocks


def parse_captions(data: bytes, fmt: str, duration: float, *, name: str, max_bytes: int = 2 * 1024**2,
                   max_cues: int = 20_000) -> list[Cue]:
    """The cues of a WebVTT (``fmt="vtt"``) or SRT (``"srt"``) file, in start order.

    Args:
        data: The file's bytes.
        fmt: ``vtt`` or ``srt``.
        duration: The video's duration in seconds: no cue may start after it.
        name: The file's name, for messages.
        max_bytes: Largest accepted file.
        max_cues: Most cues accepted.

    Raises:
        PixelFlowError: ``invalid_captions``, ``details["reason"]`` one of ``too_large``,
            ``not_text``, ``no_header``, ``not_a_cue``, ``bad_timestamp``, ``too_many_cues``,
            ``cue_after_end``, ``no_cues``.
    """
    if len(data) > max_bytes:
        raise invalid(name, "too_large", f"{len(data)} bytes; the largest accepted is {max_bytes} "
                      "(PIXELFLOW_CAPTIONS_MAX_BYTES)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(name, "not_text", "not UTF-8 text") from None
    if "\x00" in text:
        raise invalid(name, "not_text", "not text (it holds NUL bytes)")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    blocks = _blocks(text)
    if fmt == "vtt":
        if not text.startswith("WEBVTT") or not _HEADER.match(text.split("\n", 1)[0]):
            raise invalid(name, "no_header", "a WebVTT file starts with the line WEBVTT", 1)
        blocks = blocks[1:]
    cues: list[Cue] = []
    for first, lines in blocks:
        if fmt == "vtt" and _SKIPPED_BLOCK.match(lines[0]):
            continue
        at = 0 if "-->" in lines[0] else 1
        if fmt == "srt" and at == 1 and not lines[0].strip().isdigit():
            raise invalid(name, "not_a_cue", "an SRT block is a number, a timing line and text", first)
        if at >= len(lines) or "-->" not in lines[at]:
            raise invalid(name, "not_a_cue", "a block without a timing line (start --> end)", first)
        timing = _TIMING.match(lines[at].strip())
        start = _seconds(timing.group(1), fmt) if timing else None
        end = _seconds(timing.group(2), fmt) if timing else None
        if start is None or end is None:
            raise invalid(name, "bad_timestamp", f"malformed timing line {lines[at].strip()[:80]!r}", first + at)
        if end < start:
            raise invalid(name, "bad_timestamp", f"the cue ends ({_stamp(end)}) before it starts ({_stamp(start)})",
                          first + at)
        if start > duration + END_SLACK_SECONDS:
            raise invalid(name, "cue_after_end", f"a cue starts at {_stamp(start)}, after the video's end "
                          f"({_stamp(duration)})", first + at)
        body = lines[at + 1:]
        if any("-->" in line for line in body):
            raise invalid(name, "bad_timestamp", "a timing line inside a cue's text (a blank line is missing)",
                          first + at + 1 + next(i for i, line in enumerate(body) if "-->" in line))
        text_lines = [cleaned for cleaned in (cue_text(line) for line in body) if cleaned]
        if not text_lines:
            continue
        cues.append(Cue(start, end, "\n".join(text_lines)))
        if len(cues) > max_cues:
            raise invalid(name, "too_many_cues", f"more than {max_cues} cues (PIXELFLOW_CAPTIONS_MAX_CUES)")
    if not cues:
        raise invalid(name, "no_cues", "no cues")
    return sorted(cues, key=lambda c: (c.start, c.end))


def webvtt(cues: list[Cue]) -> str:
    """The published WebVTT file: the header with its timestamp map, then each cue's timing and text."""
    parts = [f"WEBVTT\n{TIMESTAMP_MAP}\n"]
    parts += [f"{_stamp(c.start)} --> {_stamp(c.end)}\n{c.text}\n" for c in cues]
    return "\n".join(parts)


def subtitle_playlist(duration: float, uri: str = "captions.vtt") -> str:
    """The subtitles rendition's VOD media playlist: one WebVTT segment lasting the video.

    >>> print(subtitle_playlist(8.0), end="")
    #EXTM3U
    #EXT-X-VERSION:3
    #EXT-X-TARGETDURATION:8
    #EXT-X-MEDIA-SEQUENCE:0
    #EXT-X-PLAYLIST-TYPE:VOD
    #EXTINF:8.000,
    captions.vtt
    #EXT-X-ENDLIST
    """
    return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{max(1, math.ceil(duration))}\n"
            f"#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{duration:.3f},\n{uri}\n#EXT-X-ENDLIST\n")


def subtitle_entries(captions: list[Captions]) -> list[SubtitleEntry]:
    """The master playlist's subtitles group: the first language is the default."""
    return [SubtitleEntry(c.playlist, c.language, c.name, default=(i == 0), group_id=GROUP_ID)
            for i, c in enumerate(captions)]


def load_captions(key: str, video_key: str, data: bytes, duration: float, *, max_bytes: int,
                  max_cues: int, etag: str | None = None) -> Captions:
    """One sidecar of ``video_key`` validated and converted (raises ``invalid_captions``)."""
    name = key.rsplit("/", 1)[-1]
    found = sidecar_of(video_key, key)
    if found is None:
        raise invalid(name, "not_a_sidecar", f"not a caption file of {video_key.rsplit('/', 1)[-1]}")
    language = caption_language(found[0], name)
    cues = parse_captions(data, found[1], duration, name=name, max_bytes=max_bytes, max_cues=max_cues)
    return Captions(language, language_name(language), key, webvtt(cues), (etag or "").strip('"'))
