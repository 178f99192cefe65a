"""Quality and size of renditions: SSIM against the source, bitrates against the ladder's caps.

SSIM is FFmpeg's ``ssim`` filter between the decoded rendition and the source scaled (bicubic)
to the rendition's size. All renditions of a source are compared in one FFmpeg process, so the
source is decoded once per comparison pass, whatever the number of renditions.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pixelflow.core.hls import parse_media_playlist

PLAYLIST = "index.m3u8"


@dataclass
class Output:
    """One video rendition to measure."""

    key: str  # unique name in the comparison pass
    path: Path  # an MP4 file, or an HLS rendition folder (index.m3u8, init, segments)
    width: int = 0
    height: int = 0
    cap_kbps: int | None = None
    bufsize_kbps: int | None = None
    segment_seconds: float | None = None
    stats: dict = field(default_factory=dict)


def playable_file(output: Output, scratch: Path) -> Path:
    """An MP4 file of the rendition: the file itself, or an HLS folder's init + segments joined."""
    if output.path.is_file():
        return output.path
    playlist = parse_media_playlist((output.path / PLAYLIST).read_text())
    joined = scratch / f"{output.key}.mp4"
    joined.parent.mkdir(parents=True, exist_ok=True)
    with open(joined, "wb") as out:
        for name in ([playlist.init] if playlist.init else []) + [uri for uri, _ in playlist.segments]:
            out.write((output.path / name).read_bytes())
    return joined


def _video_stream(path: Path) -> dict:
    data = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=width,height,bit_rate,duration,nb_frames:format=duration", "-of", "json", str(path)],
        check=True, capture_output=True, text=True).stdout)
    stream = data["streams"][0]
    stream["format_duration"] = float(data.get("format", {}).get("duration") or 0)
    return stream


def measure_size(output: Output) -> dict:
    """Average and peak bitrate of the video (kbit/s), and whether they respect the rung's cap.

    For HLS the average is every byte (init and segments) over the playlist's duration; the peak
    is the largest rate of a full-length segment (``peak_any_kbps`` also counts segments shorter
    than half the longest, listed in ``short_segments``: one keyframe over a few milliseconds is
    no sustained rate). A capped encode (VBV ``maxrate``/``bufsize``) sends at most
    ``maxrate * T + bufsize`` bits in any T seconds, so it is within its cap when the average is at
    most ``maxrate + bufsize / duration`` and every segment of T seconds holds at most
    ``maxrate * T + bufsize`` bits.
    """
    if output.path.is_file():
        stream = _video_stream(output.path)
        output.width = output.width or int(stream["width"])
        output.height = output.height or int(stream["height"])
        seconds = float(stream.get("duration") or stream["format_duration"])
        average = float(stream.get("bit_rate") or 0) / 1000 or output.path.stat().st_size * 8 / 1000 / seconds
        stats = {"avg_kbps": round(average), "peak_kbps": None, "duration": round(seconds, 3)}
    else:
        playlist = parse_media_playlist((output.path / PLAYLIST).read_text())
        init = (output.path / playlist.init).stat().st_size if playlist.init else 0
        sizes = [((output.path / uri).stat().st_size, d) for uri, d in playlist.segments]
        seconds = sum(d for _, d in sizes)
        total = init + sum(s for s, _ in sizes)
        longest = max(d for _, d in sizes)
        full = [(s, d) for s, d in sizes if d >= longest / 2] or sizes
        stats = {"avg_kbps": round(total * 8 / 1000 / seconds), "duration": round(seconds, 3),
                 "peak_kbps": round(max(s * 8 / 1000 / d for s, d in full)),
                 "peak_any_kbps": round(max(s * 8 / 1000 / d for s, d in sizes if d > 0)),
                 "short_segments": [round(d, 3) for _, d in sizes if d < longest / 2]}
    stats["cap_kbps"] = output.cap_kbps
    if output.cap_kbps:
        # VBV: over any T seconds at most maxrate * T + bufsize bits
        buffer = output.bufsize_kbps or 0
        average_allowed = output.cap_kbps + buffer / max(seconds, 0.001)
        stats["avg_allowed_kbps"] = round(average_allowed)
        segments_ok = output.path.is_file() or all(
            s * 8 / 1000 <= output.cap_kbps * d + buffer for s, d in sizes)
        stats["within_cap"] = stats["avg_kbps"] <= average_allowed and segments_ok
    output.stats.update(stats)
    return stats


def _mean_ssim(stats_file: Path) -> dict:
    values: dict[str, list[float]] = {"Y": [], "U": [], "V": [], "All": []}
    for line in stats_file.read_text().splitlines():
        for name, number in re.findall(r"\b(Y|U|V|All):([0-9.]+)", line):
            values[name].append(float(number))
    frames = len(values["All"])
    if not frames:
        return {"ssim_frames": 0}
    return {"ssim": round(sum(values["All"]) / frames, 5), "ssim_y": round(sum(values["Y"]) / frames, 5),
            "ssim_frames": frames}


def measure_ssim(source: Path, outputs: list[Output], scratch: Path, log: Path, timeout: float = 3600) -> None:
    """SSIM of every output against ``source``, in one FFmpeg process (one decode of the source).

    Results are stored in each output's ``stats`` (``ssim``: the Y/U/V-weighted "All" value,
    ``ssim_y``: luma only, ``ssim_frames``: frames compared).
    """
    if not outputs:
        return
    scratch.mkdir(parents=True, exist_ok=True)
    files = [playable_file(o, scratch) for o in outputs]
    for output, path in zip(outputs, files):
        if not (output.width and output.height):
            stream = _video_stream(path)
            output.width, output.height = int(stream["width"]), int(stream["height"])
    sizes = sorted({(o.width, o.height) for o in outputs})
    users = {size: [i for i, o in enumerate(outputs) if (o.width, o.height) == size] for size in sizes}
    chains = [f"[0:v:0]setpts=PTS-STARTPTS,format=yuv420p,split={len(sizes)}" + "".join(f"[r{j}]" for j in range(len(sizes)))]
    for j, size in enumerate(sizes):
        count = len(users[size])
        chains.append(f"[r{j}]scale={size[0]}:{size[1]}:flags=bicubic,setsar=1"
                      + (f",split={count}" if count > 1 else "") + "".join(f"[ref{i}]" for i in users[size]))
    stats_files = []
    for i, output in enumerate(outputs):
        stats_file = scratch / f"ssim-{i}.log"
        stats_files.append(stats_file)
        chains.append(f"[{i + 1}:v:0]setpts=PTS-STARTPTS,format=yuv420p,setsar=1[d{i}]")
        chains.append(f"[d{i}][ref{i}]ssim=stats_file={stats_file}[o{i}]")
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i", str(source)]
    for path in files:
        args += ["-i", str(path)]
    args += ["-filter_complex", ";".join(chains)]
    for i in range(len(outputs)):
        args += ["-map", f"[o{i}]", "-f", "null", "-"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.run(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True, timeout=timeout)
    for output, stats_file in zip(outputs, stats_files):
        output.stats.update(_mean_ssim(stats_file))
