"""Generators of PixelFlow's bad-input corpus, built at test time with FFmpeg and Python.

Nothing here is committed media: every file is made from lavfi sources (``testsrc2``, ``sine``)
and, for the damaged and hostile cases, patched byte by byte:

* ISO BMFF (MP4) boxes are parsed and re-serialised (:class:`Box`), so a header can say what a
  real file never would: a 30000x30000 H.264 sequence parameter set (:func:`rewrite_sps`), a
  10-hour or zero duration, a 1000 fps or timeless track;
* MPEG-2 sequence headers claim 16000x16000, Matroska ``Duration`` goes negative;
* truncations cut an MP4 in the middle of ``mdat`` (index kept) or before ``moov`` (index lost);
  corruption overwrites bytes in the middle of the coded pictures;
* hostile payloads: HLS and ffconcat playlists, an SDP descriptor and AVI files hiding an HLS
  playlist in a GAB2 subtitle stream, all naming a secret local file and a local TCP port
  (:class:`SecretFile`, :class:`TcpCanary` report whether anything ever opened them).

Each ``make_*`` function takes the output path and returns it.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import threading
import uuid
from pathlib import Path

FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y"]


def ffmpeg(*args: str) -> None:
    subprocess.run([*FFMPEG, *map(str, args)], check=True)


def lavfi_clip(path: Path, *, seconds: float = 2.0, size: str = "320x240", rate: str = "30", audio: bool = True,
               vcodec: str = "libx264", pix_fmt: str = "yuv420p", vf: str | None = None, fmt: str | None = None,
               extra: list[str] | None = None, tones: tuple[int, ...] = (440,)) -> Path:
    """A test-pattern clip (``testsrc2``) with one sine audio track per entry of ``tones``."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        for tone in tones:
            args += ["-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000:duration={seconds}"]
    args += ["-map", "0:v"] + ([f for i in range(len(tones)) for f in ("-map", f"{i + 1}:a")] if audio else [])
    if vf:
        args += ["-vf", vf]
    args += ["-c:v", vcodec, "-pix_fmt", pix_fmt]
    if vcodec == "libx264":
        args += ["-preset", "ultrafast"]
    if vcodec == "libx265":
        args += ["-preset", "ultrafast", "-x265-params", "log-level=error"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "64k"]
    args += extra or []
    if fmt:
        args += ["-f", fmt]
    ffmpeg(*args, path)
    return path


# --- ISO BMFF ------------------------------------------------------------------------------

_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta"}
#: Boxes with fixed fields before their child boxes: how many bytes of fields.
_FIELDS_BEFORE_CHILDREN = {b"stsd": 8, b"avc1": 78, b"hvc1": 78, b"mp4a": 28}


class Box:
    """One ISO BMFF box: ``fields`` then either ``children`` or an opaque ``payload``."""

    def __init__(self, kind: bytes, fields: bytes = b"", payload: bytes = b"", children: list["Box"] | None = None):
        self.kind, self.fields, self.payload, self.children = kind, fields, payload, children

    def to_bytes(self) -> bytes:
        body = self.fields + (b"".join(c.to_bytes() for c in self.children) if self.children is not None else self.payload)
        return struct.pack(">I4s", len(body) + 8, self.kind) + body

    def walk(self):
        yield self
        for child in self.children or []:
            yield from child.walk()


def parse_boxes(data: bytes) -> list[Box]:
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        size = size or len(data) - offset
        body = data[offset + 8:offset + size]
        if kind in _CONTAINER_BOXES:
            boxes.append(Box(kind, children=parse_boxes(body)))
        elif kind in _FIELDS_BEFORE_CHILDREN:
            n = _FIELDS_BEFORE_CHILDREN[kind]
            boxes.append(Box(kind, fields=body[:n], children=parse_boxes(body[n:])))
        else:
            boxes.append(Box(kind, payload=body))
        offset += size
    return boxes


def rewrite_mp4(src: Path, dst: Path, edit) -> Path:
    """Parse ``src``, let ``edit(boxes)`` change them, write ``dst``. The ``mdat`` must come
    before ``moov`` (FFmpeg's default, no faststart), so sample offsets stay valid when a box in
    ``moov`` changes size."""
    boxes = parse_boxes(src.read_bytes())
    kinds = [b.kind for b in boxes]
    if kinds.index(b"mdat") > kinds.index(b"moov"):
        raise ValueError("rewrite_mp4 needs mdat before moov")
    edit(boxes)
    dst.write_bytes(b"".join(b.to_bytes() for b in boxes))
    return dst


def all_boxes(boxes: list[Box]):
    for box in boxes:
        yield from box.walk()


def video_trak_boxes(boxes: list[Box]):
    for trak in (b for b in all_boxes(boxes) if b.kind == b"trak"):
        inner = list(trak.walk())
        if any(b.kind == b"vmhd" for b in inner):
            yield from inner


def mdat_range(data: bytes) -> tuple[int, int]:
    """(start, end) of the ``mdat`` payload."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"mdat":
            return offset + 8, offset + size
        offset += size
    raise ValueError("no mdat")


# --- H.264 sequence parameter set ---------------------------------------------------------------

class _BitReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.u(zeros)


class _BitWriter:
    def __init__(self):
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, value: int) -> None:
        value += 1
        self.u(value.bit_length() - 1, 0)
        self.u(value.bit_length(), value)

    def to_bytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def _unescape(data: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _escape(data: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in data:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def rewrite_sps(nal: bytes, width: int, height: int) -> bytes:
    """An H.264 SPS NAL unit (Baseline/Main profile, as ``-profile:v baseline`` writes) with its
    picture size changed to ``width`` x ``height`` (rounded up to whole macroblocks)."""
    rbsp = _unescape(nal[1:])
    r, w = _BitReader(rbsp), _BitWriter()
    profile = r.u(8)
    if profile not in (66, 77, 88):
        raise ValueError(f"profile {profile} has chroma fields this rewriter does not handle")
    w.u(8, profile), w.u(8, r.u(8)), w.u(8, r.u(8)), w.ue(r.ue())  # constraints, level, sps id
    w.ue(r.ue())  # log2_max_frame_num_minus4
    poc_type = r.ue()
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(r.ue())
    elif poc_type != 2:
        raise ValueError("picture order count type 1 is not handled")
    w.ue(r.ue()), w.u(1, r.u(1))  # max_num_ref_frames, gaps_in_frame_num_allowed
    r.ue(), r.ue()
    w.ue((width + 15) // 16 - 1), w.ue((height + 15) // 16 - 1)
    last = len(rbsp) * 8 - 1
    while not (rbsp[last >> 3] >> (7 - (last & 7))) & 1:  # the rbsp stop bit
        last -= 1
    while r.pos < last:
        w.u(1, r.u(1))
    w.u(1, 1)
    return nal[:1] + _escape(w.to_bytes())


# --- rejected by validation ----------------------------------------------------------------------

def make_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def make_text(path: Path) -> Path:
    path.write_text("These are my holiday notes, not a video.\n" * 40)
    return path


def make_random(path: Path) -> Path:
    path.write_bytes(random.Random(20240601).randbytes(96 * 1024))
    return path


def make_png(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", "-c:v", "png", "-f", "image2pipe", path)
    return path


def make_jpeg(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", "-c:v", "mjpeg", "-f", "image2pipe", path)
    return path


def make_gif(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x72:rate=10:duration=1", "-f", "gif", path)
    return path


def make_y4m(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", path)
    return path


def make_mp3(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-c:a", "libmp3lame", "-f", "mp3", path)
    return path


def make_m4a(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac", "-f", "mp4", path)
    return path


def make_subtitles_only(path: Path) -> Path:
    """A Matroska file holding a subtitle track and nothing else: neither video nor audio."""
    srt = path.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    ffmpeg("-i", srt, "-c:s", "srt", "-f", "matroska", path)
    srt.unlink()
    return path


def make_wma_only(path: Path) -> Path:
    """Audio alone in a codec audio-only uploads do not accept (WMA in Matroska)."""
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-c:a", "wmav2", "-f", "matroska", path)
    return path


def _m4a_with_mdat(path: Path, damage: str) -> Path:
    full = path.with_suffix(".full")
    ffmpeg("-f", "lavfi", "-i", "sine=duration=4", "-c:a", "aac", "-movflags", "+faststart", "-f", "mp4", full)
    data = bytearray(full.read_bytes())
    start, end = mdat_range(data)
    middle = start + (end - start) // 2
    if damage == "truncated":
        data = data[:middle]
    else:
        noise = random.Random(7)
        for i in range(middle, middle + 2048):
            data[i] = noise.randrange(256)
    path.write_bytes(bytes(data))
    full.unlink()
    return path


def make_truncated_m4a(path: Path) -> Path:
    """An M4A (AAC, index first) cut in the middle of its audio data."""
    return _m4a_with_mdat(path, "truncated")


def make_corrupt_m4a(path: Path) -> Path:
    """An M4A whose AAC frames are overwritten with noise in the middle."""
    return _m4a_with_mdat(path, "corrupt")


def make_ffv1(path: Path) -> Path:
    return lavfi_clip(path, size="64x48", audio=False, vcodec="ffv1", fmt="matroska", seconds=1)


def make_tiny(path: Path) -> Path:
    return lavfi_clip(path, size="12x12", audio=False, fmt="mp4", seconds=1)


def _base_mp4(path: Path, seconds: float = 3.0, **kwargs) -> Path:
    """A plain MP4 (``mdat`` first, ``moov`` at the end), Baseline H.264 + AAC."""
    return lavfi_clip(path, seconds=seconds, fmt="mp4", extra=["-profile:v", "baseline"], **kwargs)


def make_truncated_mdat(path: Path) -> Path:
    """An MP4 with its index first (faststart) cut in the middle of the media data: the index
    promises three seconds the file no longer holds."""
    full = lavfi_clip(path.with_suffix(".full"), seconds=3, fmt="mp4", extra=["-movflags", "+faststart"])
    data = full.read_bytes()
    start, end = mdat_range(data)
    path.write_bytes(data[:start + (end - start) // 2])
    full.unlink()
    return path


def make_truncated_no_moov(path: Path) -> Path:
    """An MP4 written index-last, cut before the index: a half-finished upload."""
    full = _base_mp4(path.with_suffix(".full"))
    data = full.read_bytes()
    start, end = mdat_range(data)
    path.write_bytes(data[:start + (end - start) // 2])
    full.unlink()
    return path


def make_truncated_mkv(path: Path) -> Path:
    """A Matroska file cut in half: its header still claims the full three seconds."""
    full = lavfi_clip(path.with_suffix(".full"), seconds=3, fmt="matroska")
    data = full.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    full.unlink()
    return path


def make_truncated_avi(path: Path) -> Path:
    """An AVI (MPEG-4 Part 2) cut in half: the last frame is damaged, the index is gone."""
    full = path.with_suffix(".full")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-c:v", "mpeg4", "-an", "-f", "avi", full)
    data = full.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    full.unlink()
    return path


def make_corrupt_mp4(path: Path) -> Path:
    """An index-last MP4 whose coded pictures are overwritten with noise in the middle."""
    full = _base_mp4(path.with_suffix(".full"), audio=False)
    data = bytearray(full.read_bytes())
    start, end = mdat_range(data)
    noise = random.Random(7)
    middle = start + (end - start) // 2
    for i in range(middle, middle + 4096):
        data[i] = noise.randrange(256)
    path.write_bytes(bytes(data))
    full.unlink()
    return path


def make_corrupt_ts(path: Path) -> Path:
    """An MPEG-TS whose packet payloads (sync bytes and headers kept) turn to noise in the middle."""
    full = lavfi_clip(path.with_suffix(".full"), seconds=3, fmt="mpegts", extra=["-g", "30"])
    data = bytearray(full.read_bytes())
    noise = random.Random(3)
    packets = len(data) // 188
    for packet in range(packets // 2, packets // 2 + 30):
        for i in range(packet * 188 + 4, packet * 188 + 188):
            data[i] = noise.randrange(256)
    path.write_bytes(bytes(data))
    full.unlink()
    return path


def make_huge_dimensions_h264(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """An MP4 whose H.264 SPS (in ``avcC``), sample entry and track header claim ``width`` x
    ``height``; the pictures themselves are 320x240."""
    base = _base_mp4(path.with_suffix(".base"), audio=False)

    def edit(boxes):
        for box in all_boxes(boxes):
            if box.kind == b"avc1":
                fields = bytearray(box.fields)
                struct.pack_into(">HH", fields, 24, width, height)
                box.fields = bytes(fields)
            elif box.kind == b"avcC":
                p = box.payload
                length = struct.unpack(">H", p[6:8])[0]
                sps = rewrite_sps(p[8:8 + length], width, height)
                box.payload = p[:6] + struct.pack(">H", len(sps)) + sps + p[8 + length:]
            elif box.kind == b"tkhd":
                p = bytearray(box.payload)
                struct.pack_into(">II", p, len(p) - 8, width << 16, height << 16)
                box.payload = bytes(p)

    rewrite_mp4(base, path, edit)
    base.unlink()
    return path


def make_huge_dimensions_mpeg2(path: Path) -> Path:
    """An MPEG-TS of MPEG-2 video whose sequence headers (and extensions) claim 16000x16000."""
    base = lavfi_clip(path.with_suffix(".base"), audio=False, vcodec="mpeg2video", fmt="mpegts", seconds=1)
    data = bytearray(base.read_bytes())
    value = 16000 & 0xFFF
    at = data.find(b"\x00\x00\x01\xb3")
    while at >= 0:
        data[at + 4] = value >> 4
        data[at + 5] = ((value & 0xF) << 4) | (value >> 8)
        data[at + 6] = value & 0xFF
        at = data.find(b"\x00\x00\x01\xb3", at + 4)
    at = data.find(b"\x00\x00\x01\xb5")
    while at >= 0:
        if data[at + 4] >> 4 == 1:  # sequence extension: the two high bits of each size
            data[at + 5] |= 0x01
            data[at + 6] |= 0xE0
        at = data.find(b"\x00\x00\x01\xb5", at + 4)
    path.write_bytes(bytes(data))
    base.unlink()
    return path


def _set_durations(seconds: float, kinds: tuple[bytes, ...]):
    def edit(boxes):
        for box in all_boxes(boxes):
            if box.kind not in kinds:
                continue
            p = bytearray(box.payload)
            if p[0] != 0:
                raise ValueError("version 1 headers are not handled")
            if box.kind == b"tkhd":
                struct.pack_into(">I", p, 20, int(seconds * 1000))  # in the movie timescale (1000)
            else:
                timescale = struct.unpack(">I", p[12:16])[0]
                struct.pack_into(">I", p, 16, int(seconds * timescale))
            box.payload = bytes(p)
    return edit


def make_zero_duration(path: Path) -> Path:
    """An MP4 whose movie, track and media headers all state a zero duration."""
    base = _base_mp4(path.with_suffix(".base"))
    rewrite_mp4(base, path, _set_durations(0, (b"mvhd", b"tkhd", b"mdhd")))
    base.unlink()
    return path


def make_long_duration_mp4(path: Path, seconds: float = 10 * 3600) -> Path:
    """A 3 s MP4 whose movie header claims ten hours."""
    base = _base_mp4(path.with_suffix(".base"))
    rewrite_mp4(base, path, _set_durations(seconds, (b"mvhd",)))
    base.unlink()
    return path


def _matroska_duration(path: Path, milliseconds: float) -> Path:
    base = lavfi_clip(path.with_suffix(".base"), fmt="matroska")
    data = bytearray(base.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Segment Info / Duration, an 8-byte float (in ms by default)
    if at >= 0:
        struct.pack_into(">d", data, at + 3, milliseconds)
    else:
        at = data.find(b"\x44\x89\x84")
        if at < 0:
            raise ValueError("no Matroska duration")
        struct.pack_into(">f", data, at + 3, milliseconds)
    path.write_bytes(bytes(data))
    base.unlink()
    return path


def make_negative_duration(path: Path) -> Path:
    """A Matroska file whose header says it lasts minus five seconds."""
    return _matroska_duration(path, -5000.0)


def make_long_duration_mkv(path: Path) -> Path:
    """A 2 s Matroska file whose header says it lasts ten hours."""
    return _matroska_duration(path, 10 * 3600 * 1000.0)


def make_work_budget(path: Path) -> Path:
    """An 8K (7680x4320) 240 fps MP4 of a few black frames whose movie header claims two hours:
    every limit on its own is met (size, sides, area, frame rate, duration), but decoding it
    would mean 5.7e13 pixels, five times the default work budget."""
    base = path.with_suffix(".base")
    ffmpeg("-f", "lavfi", "-i", "color=black:size=7680x4320:rate=240", "-frames:v", "3", "-c:v", "mpeg4",
           "-pix_fmt", "yuv420p", "-f", "mp4", base)
    rewrite_mp4(base, path, _set_durations(2 * 3600, (b"mvhd",)))
    base.unlink()
    return path


def make_many_streams(path: Path, streams: int = 100) -> Path:
    """A 1 s 320x240 MP4 with ``streams`` audio tracks (one sine source mapped again and again)."""
    args = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=1", "-map", "0:v"]
    args += ["-map", "1:a"] * streams
    ffmpeg(*args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "16k",
           "-f", "mp4", path)
    return path


def make_huge_tag(path: Path, size: int = 1024 * 1024) -> Path:
    """A 1 s 320x240 Matroska clip whose title tag is ``size`` bytes of text (read from an
    FFmetadata file: no command line holds that much)."""
    meta = path.with_suffix(".meta")
    meta.write_text(";FFMETADATA1\ntitle=" + "A" * size + "\n")
    base = lavfi_clip(path.with_suffix(".base.mkv"), seconds=1, fmt="matroska")
    ffmpeg("-i", base, "-f", "ffmetadata", "-i", meta, "-map", "0", "-map_metadata", "1", "-c", "copy", "-f", "matroska",
           path)
    base.unlink()
    meta.unlink()
    return path


def _video_track(edit_one):
    def edit(boxes):
        for box in video_trak_boxes(boxes):
            edit_one(box)
    return edit


def make_fps_1000(path: Path) -> Path:
    """An MP4 whose video timescale makes every frame last a millisecond: 1000 fps."""
    base = lavfi_clip(path.with_suffix(".base"), audio=False, fmt="mp4")

    def edit(box):
        if box.kind == b"mdhd":
            p = bytearray(box.payload)
            old, duration = struct.unpack(">II", p[12:20])
            struct.pack_into(">II", p, 12, 512000, duration * 512000 // old)
            box.payload = bytes(p)

    rewrite_mp4(base, path, _video_track(edit))
    base.unlink()
    return path


def make_fps_zero(path: Path) -> Path:
    """An MP4 whose sample durations are all zero: every frame at the same instant (``1/0`` fps)."""
    base = lavfi_clip(path.with_suffix(".base"), audio=False, fmt="mp4")

    def edit(box):
        if box.kind == b"stts":
            p = bytearray(box.payload)
            for i in range(struct.unpack(">I", p[4:8])[0]):
                struct.pack_into(">I", p, 8 + 8 * i + 4, 0)
            box.payload = bytes(p)

    rewrite_mp4(base, path, _video_track(edit))
    base.unlink()
    return path


def make_fps_tiny(path: Path) -> Path:
    """An MP4 whose video timescale is 1 Hz: a frame every 512 s (0.002 fps)."""
    base = lavfi_clip(path.with_suffix(".base"), audio=False, fmt="mp4")

    def edit(box):
        if box.kind == b"mdhd":
            p = bytearray(box.payload)
            struct.pack_into(">I", p, 12, 1)
            box.payload = bytes(p)

    rewrite_mp4(base, path, _video_track(edit))
    base.unlink()
    return path


# --- hostile payloads ----------------------------------------------------------------------------

class SecretFile:
    """A secret a hostile upload tries to pull into its output: a regular file holding a unique
    token, and a FIFO beside it. Anything that opens the FIFO blocks until a writer comes; a
    thread plays that writer, records the open and hands over the token too, so a read of
    either path would leak the same token and the FIFO proves whether any process opened it.
    """

    def __init__(self, directory: Path):
        self.token = f"PIXELFLOW-SECRET-{uuid.uuid4().hex}"
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "secret.ts"
        self.path.write_text(f"{self.token}\n" * 64)
        self.fifo = directory / "canary.ts"
        os.mkfifo(self.fifo)
        self.opened = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader has it open
                self._stop.wait(0.02)
                continue
            self.opened.set()
            try:
                os.write(fd, f"{self.token}\n".encode())
            except OSError:
                pass
            os.close(fd)

    @property
    def paths(self) -> list[Path]:
        return [self.path, self.fifo]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.fifo.unlink(missing_ok=True)


class TcpCanary:
    """A listening socket on loopback that records every connection (an SSRF attempt)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/x.ts"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def hls_playlist(targets: list[str]) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:0"]
    for target in targets:
        lines += ["#EXTINF:1.0,", target]
    return ("\n".join(lines + ["#EXT-X-ENDLIST", ""])).encode()


def make_hls(path: Path, secret: SecretFile, canary: TcpCanary) -> Path:
    """An HLS playlist (named like a video) whose segments are the secret files and a URL."""
    path.write_bytes(hls_playlist([f"file://{p}" for p in secret.paths] + [str(secret.path), canary.url]))
    return path


def make_ffconcat(path: Path, secret: SecretFile, canary: TcpCanary) -> Path:
    """An ffconcat script naming the secret files and a URL."""
    lines = ["ffconcat version 1.0"] + [f"file '{p}'" for p in secret.paths] + [f"file '{canary.url}'"]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_sdp(path: Path, secret: SecretFile, canary: TcpCanary) -> Path:
    """An SDP descriptor: it would make FFmpeg listen for RTP on the network."""
    path.write_text("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=pixelflow\nc=IN IP4 127.0.0.1\nt=0 0\n"
                    f"m=video {canary.port} RTP/AVP 96\na=rtpmap:96 H264/90000\n")
    return path


def _chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")


def _riff_chunks(data: bytes, offset: int, end: int):
    while offset + 8 <= end:
        fourcc, size = struct.unpack("<4sI", data[offset:offset + 8])
        yield fourcc, data[offset + 8:offset + 8 + size]
        offset += 8 + size + (size & 1)


def gab2_packet(payload: bytes, name: str = "English") -> bytes:
    """A GAB2 subtitle packet: the format AVI uses to embed a whole subtitle file."""
    label = (name + "\0").encode("utf-16-le")
    return (b"GAB2\0" + struct.pack("<H", 2) + struct.pack("<I", len(label)) + label
            + struct.pack("<H", 4) + struct.pack("<I", len(payload)) + payload)


def make_gab2_avi(path: Path, payload: bytes, keep_video: bool = True) -> Path:
    """An AVI (MPEG-4 Part 2 video, 2 s) with a GAB2 subtitle stream carrying ``payload``,
    written without an index so the subtitle chunk is read first."""
    base = path.with_suffix(".base.avi")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2", "-c:v", "mpeg4", "-an", base)
    data = base.read_bytes()
    base.unlink()
    parts = []
    for fourcc, body in _riff_chunks(data, 12, len(data)):
        if fourcc == b"LIST" and body[:4] == b"hdrl":
            inner = []
            for kind, sub in _riff_chunks(body, 4, len(body)):
                if kind == b"avih":
                    fields = list(struct.unpack("<10I", sub[:40]))
                    fields[3] &= ~0x10  # AVIF_HASINDEX
                    fields[6] = (fields[6] if keep_video else 0) + 1  # streams
                    inner.append(_chunk(kind, struct.pack("<10I", *fields) + sub[40:]))
                elif kind == b"LIST" and sub[:4] == b"strl":
                    if keep_video:
                        inner.append(_chunk(kind, sub))
                else:
                    inner.append(_chunk(kind, sub))
            header = struct.pack("<4s4sIHHIIIIIIIIhhhh", b"txts", b"\0\0\0\0", 0, 0, 0, 0, 1, 1, 0, 1, 0,
                                 0xFFFFFFFF, 0, 0, 0, 0, 0)
            inner.append(_chunk(b"LIST", b"strl" + _chunk(b"strh", header) + _chunk(b"strf", b"")))
            parts.append(_chunk(b"LIST", b"hdrl" + b"".join(inner)))
        elif fourcc == b"LIST" and body[:4] == b"movi":
            stream = b"01" if keep_video else b"00"
            movi = [_chunk(stream + b"tx", gab2_packet(payload))]
            if keep_video:
                movi += [_chunk(kind, sub) for kind, sub in _riff_chunks(body, 4, len(body)) if kind[2:] in (b"dc", b"db")]
            parts.append(_chunk(b"LIST", b"movi" + b"".join(movi)))
        elif fourcc != b"idx1":
            parts.append(_chunk(fourcc, body))
    riff = b"AVI " + b"".join(parts)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    return path


def make_gab2_hls(path: Path, secret: SecretFile, canary: TcpCanary, keep_video: bool = True) -> Path:
    """The AVI/GAB2/HLS file-disclosure trick: an HLS playlist naming the secret, inside an AVI."""
    targets = [f"file://{p}" for p in secret.paths] + [canary.url]
    return make_gab2_avi(path, hls_playlist(targets), keep_video=keep_video)


# --- unusual but valid -------------------------------------------------------------------------

def make_rotated(path: Path) -> Path:
    """A phone-style portrait video: stored 640x360 landscape with a 90 degree rotation."""
    base = lavfi_clip(path.with_suffix(".base"), size="640x360", fmt="mp4")
    ffmpeg("-i", base, "-map", "0", "-c", "copy", "-metadata:s:v:0", "rotate=90", "-f", "mp4", path)
    base.unlink()
    return path


def make_odd_size(path: Path) -> Path:
    """853x479 (odd sides), H.264 4:4:4, the only way x264 takes odd sizes."""
    return lavfi_clip(path, size="854x480", vf="scale=853:479", pix_fmt="yuv444p", fmt="mp4")


def make_four_by_three(path: Path) -> Path:
    return lavfi_clip(path, size="640x480", fmt="mp4")


def make_anamorphic(path: Path) -> Path:
    """480x360 stored with 4:3 pixels: shown as 640x360 (16:9)."""
    return lavfi_clip(path, size="480x360", vf="setsar=4/3", fmt="mp4")


def make_vfr(path: Path) -> Path:
    """Variable frame rate: every fifth frame of a 30 fps clip dropped, timestamps kept."""
    return lavfi_clip(path, vf="select='not(eq(mod(n\\,5)\\,0))'", fmt="mp4", extra=["-fps_mode", "vfr"])


def make_ten_bit(path: Path) -> Path:
    return lavfi_clip(path, pix_fmt="yuv420p10le", fmt="mp4")


def make_hdr_pq(path: Path) -> Path:
    """HDR10-style: HEVC Main 10, BT.2020 primaries and matrix, PQ transfer."""
    return lavfi_clip(path, vcodec="libx265", pix_fmt="yuv420p10le", fmt="mp4",
                      extra=["-tag:v", "hvc1", "-color_primaries", "bt2020", "-color_trc", "smpte2084",
                             "-colorspace", "bt2020nc"])


def make_hdr_hlg_transfer_only(path: Path) -> Path:
    """10-bit H.264 tagged with the HLG transfer and nothing else (primaries, matrix unknown)."""
    return lavfi_clip(path, pix_fmt="yuv420p10le", fmt="mp4", extra=["-color_trc", "arib-std-b67"])


def make_interlaced(path: Path) -> Path:
    """Interlaced H.264 (top field first), 25 frames (50 fields) per second."""
    return lavfi_clip(path, rate="50", vf="tinterlace=mode=interleave_top,setfield=tff", fmt="mp4",
                      extra=["-flags", "+ilme+ildct", "-x264-params", "tff=1"])


def make_no_audio(path: Path) -> Path:
    return lavfi_clip(path, audio=False, fmt="mp4")


def make_multi_audio(path: Path) -> Path:
    """Matroska with two audio tracks: 440 Hz first, 1000 Hz second and marked default."""
    return lavfi_clip(path, fmt="matroska", tones=(440, 1000),
                      extra=["-disposition:a:0", "0", "-disposition:a:1", "default"])


def make_sixty_fps(path: Path) -> Path:
    return lavfi_clip(path, size="1280x720", rate="60", fmt="mp4")


def make_live_webm(path: Path) -> Path:
    """A WebM written as a live stream (as browsers' MediaRecorder does): no duration, no cues."""
    return lavfi_clip(path, audio=False, vcodec="libvpx", pix_fmt="yuv420p", fmt="webm",
                      extra=["-deadline", "realtime", "-cpu-used", "16", "-b:v", "300k", "-live", "1"])


def make_ts_cut_mid_gop(path: Path) -> Path:
    """An MPEG-TS recording that starts in the middle of a GOP (as a TV or camera capture does):
    the decoder waits for the first keyframe, which is not damage."""
    full = lavfi_clip(path.with_suffix(".full"), seconds=4, fmt="mpegts", extra=["-g", "30"])
    data = full.read_bytes()
    packets = len(data) // 188
    path.write_bytes(data[(packets // 5) * 188:])
    full.unlink()
    return path
