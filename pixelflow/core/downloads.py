"""MP4 downloads: which rungs get a progressive MP4 next to their HLS rendition, where it lives,
and the name a browser saves it under.

A download is a remux (``-c copy``) of a rendition's segments and the audio rendition's into one
MP4 with its index first (``+faststart``): the same encode, no second decode and no re-encode.

Example:
    >>> from fractions import Fraction
    >>> from pixelflow.core.ladder import LadderConfig, plan_ladder
    >>> plan = plan_ladder(3840, 2160, Fraction(30), LadderConfig(heights=(360, 720, 1080, 2160)))
    >>> [r.name for r in download_renditions(plan, "highest", 1080)]
    ['1080p']
    >>> [r.name for r in download_renditions(plan, "all", 1080)]
    ['360p', '720p', '1080p']
    >>> download_renditions(plan, "none", 1080)
    []
    >>> download_path("1080p")
    'downloads/1080p.mp4'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import quote

from pixelflow.core.ladder import Rendition

Mp4Mode = Literal["none", "highest", "all"]

#: The folder of an asset's downloads.
DOWNLOADS = "downloads"


def download_renditions(plan: Sequence[Rendition], mode: Mp4Mode, max_rung: int) -> list[Rendition]:
    """The rungs of ``plan`` (lowest first) that get an MP4 download: none, the highest at or
    below ``max_rung`` (the lowest rung when every rung is above it), or all of those."""
    if mode == "none" or not plan:
        return []
    allowed = [r for r in plan if r.rung <= max_rung] or [plan[0]]
    return allowed[-1:] if mode == "highest" else allowed


def download_path(name: str, ext: str = "mp4") -> str:
    """The path of rung ``name``'s MP4 inside the asset (``audio.m4a`` for an audio-only asset)."""
    return f"{DOWNLOADS}/{name}.{ext}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()-]+")


def download_filename(source_key: str, name: str, ext: str = "mp4") -> str:
    """The file name a download is saved under: the source's name (without its folders and
    extension), then the rung: ``talk-1080p.mp4``.

    >>> download_filename("videos/My Talk (final).mov", "720p")
    'My Talk (final)-720p.mp4'
    >>> download_filename('x/"; evil=1\\r\\n.mp4', "360p")
    '_ evil_1_-360p.mp4'
    """
    stem = _UNSAFE.sub("_", PurePosixPath(source_key).stem[:100]).strip(" .") or "video"
    return f"{stem}-{name}.{ext}"


def content_disposition(source_key: str, name: str, ext: str = "mp4") -> str:
    """The ``Content-Disposition`` of a download: an attachment with an ASCII ``filename`` and
    the original name in UTF-8 as ``filename*`` (RFC 6266); nothing of the key can end the header
    or add a parameter.

    >>> content_disposition("videos/café.mp4", "1080p")
    'attachment; filename="caf_-1080p.mp4"; filename*=UTF-8\\'\\'caf%C3%A9-1080p.mp4'
    """
    stem = PurePosixPath(source_key).stem[:100] or "video"
    original = quote(f"{stem}-{name}.{ext}", safe="")
    return f"attachment; filename=\"{download_filename(source_key, name, ext)}\"; filename*=UTF-8''{original}"
