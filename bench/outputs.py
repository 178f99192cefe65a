"""``python -m bench.outputs``: what each output made from the one decode of the source costs.

The commands are PixelFlow's own (:mod:`pixelflow.core.ffmpeg_args`), run on local files without
the flow around them, on one machine, each measured by :func:`bench.measure.run_group` (wall
time, CPU time of the process and its children, peak memory); medians over ``--repeats`` runs,
the variants interleaved (their order rotated every repeat). Nothing here asserts a time.

1. **The ladder process** (every rung and the audio, ``ladder_encode_args``) alone, then with the
   poster, with the storyboard and with both taken from its pictures, and with the audio's
   loudness measured instead of encoded (``PIXELFLOW_LOUDNESS_TARGET``): what each adds, in
   seconds and against the ladder, paired per repeat. For contrast, what the same outputs cost
   in processes of their own (``storyboard_args``: a second decode of the source;
   ``poster_args``: a seek), which is what a retry runs.
2. **The MP4 download**: the highest download rung (``PIXELFLOW_MP4=highest``) and the audio
   joined from their segments, as ``make_download`` joins them, then remuxed (``remux_args``);
   against that rung's encode alone (``encode_args``) and against the ladder process.
3. **A thumbnail request**: :class:`pixelflow.ops.thumbnails.ThumbnailService` itself (the API's
   and the player server's code: manifest read, plan, segment fetch, ``thumbnail_args`` run by
   the sandboxed runner, LRU cache), in this process, its bucket a local folder holding the
   ladder's output as the published asset (:class:`LocalBucket`: no S3 round trips, which a
   real request adds). Cold (a new service each time), then a cached hit. CPU time is this
   process's plus its reaped children's (FFmpeg).
4. **Loudness**: the audio rendition plain (``audio_args``), the measurement alone
   (``loudness_measure_args``, what a retry or an audio-only source runs) and the normalised
   encode (``audio_args`` with the measurement: ``loudnorm``'s second pass), on the source's audio
   and on an audio-only source; per minute of audio.
5. **An audio-only asset**: its audio rendition and its M4A download, from a generated
   audio-only source (pink noise, ``bench.sources.ensure_audio_source``).

Example:
    >>> paired_median([10.0, 12.0, 11.0], [10.5, 12.2, 11.1])
    0.2
    >>> percent(0.2, 10.0)
    2.0
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from botocore.exceptions import ClientError

from bench.measure import Measurement, fresh_dir, run_group
from bench.report import machine, results_dir, write_results
from bench.runner import ladder_config, plan_for, probe_source
from bench.sources import SOURCES, ensure_audio_source, ensure_source
from pixelflow.core.downloads import download_renditions
from pixelflow.core.ffmpeg_args import (PLAYLIST, audio_args, encode_args, ladder_encode_args, loudness_measure_args,
                                        poster_args, remux_args, storyboard_args)
from pixelflow.core.hls import parse_media_playlist
from pixelflow.core.ladder import poster_rendition
from pixelflow.core.loudness import LoudnessTarget, parse_loudnorm
from pixelflow.core.storyboard import Storyboard
from pixelflow.core.thumbnails import plan_thumbnail
from pixelflow.ops.thumbnails import ThumbnailService
from pixelflow.settings import PixelFlowSettings

RESULTS = Path(__file__).resolve().parent / "results"
#: The asset id the thumbnail service is asked about (any id of the right shape).
ASSET_ID = "0123456789abcdef01234567"

#: The ladder process's variants: (name, what it is).
LADDER_VARIANTS = {
    "ladder": "ladder process: every rung + audio",
    "poster": "+ poster (from the poster rung's pictures)",
    "storyboard": "+ storyboard (from the smallest rung's pictures)",
    "both": "+ poster + storyboard (what the flow runs)",
    "loudness": "audio's loudness measured instead of encoded",
}
#: For contrast: the same outputs in processes of their own (what a retry runs).
ALONE_VARIANTS = {
    "storyboard_alone": "storyboard in its own process (a second decode)",
    "poster_alone": "poster in its own process (a seek)",
}


def paired_median(base: list[float], other: list[float]) -> float:
    """The median of ``other - base``, run by run (each pair measured in the same repeat)."""
    return round(statistics.median(o - b for b, o in zip(base, other)), 3)


def percent(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def summary(runs: list[Measurement]) -> dict:
    """Medians (and every run) of wall and CPU time; the largest peak memory."""
    return {"wall": round(statistics.median(m.wall for m in runs), 3),
            "cpu": round(statistics.median(m.cpu for m in runs), 3),
            "max_rss": max(m.max_rss for m in runs),
            "walls": [round(m.wall, 3) for m in runs], "cpus": [round(m.cpu, 3) for m in runs]}


def added(base: list[Measurement], runs: list[Measurement]) -> dict:
    """What ``runs`` add to ``base``, paired per repeat, in seconds and as a percentage of ``base``."""
    wall = paired_median([m.wall for m in base], [m.wall for m in runs])
    cpu = paired_median([m.cpu for m in base], [m.cpu for m in runs])
    middle = summary(base)
    return {"wall": wall, "cpu": cpu, "wall_percent": percent(wall, middle["wall"]),
            "cpu_percent": percent(cpu, middle["cpu"])}


def alone(base: list[Measurement], runs: list[Measurement]) -> dict:
    """What a process of its own, ``runs``, adds beside ``base``: all it costs."""
    own, middle = summary(runs), summary(base)
    return {"wall": own["wall"], "cpu": own["cpu"], "wall_percent": percent(own["wall"], middle["wall"]),
            "cpu_percent": percent(own["cpu"], middle["cpu"])}


def ratio(runs: list[Measurement], base: list[Measurement]) -> dict:
    """Median wall and CPU of ``runs`` against ``base``'s."""
    a, b = summary(runs), summary(base)
    return {"wall": round(a["wall"] / b["wall"], 4), "cpu": round(a["cpu"] / b["cpu"], 4) if b["cpu"] else None}


def measured(commands: list[list[str]], log: Path) -> Measurement:
    """``commands`` run and measured, their messages in ``log``; an error if any failed."""
    result = run_group(commands, log, quiet_stdout=True)
    if not result.ok:
        raise RuntimeError(f"FFmpeg failed ({result.returncodes}): {log.read_text()[-2000:]}")
    return result


def join_rendition(folder: Path, dest: Path) -> Path:
    """A rendition's init segment and segments, in its playlist's order, as one fMP4 file (what
    ``make_download`` remuxes)."""
    playlist = parse_media_playlist((folder / PLAYLIST).read_text())
    with open(dest, "wb") as joined:
        for name in [playlist.init, *(uri for uri, _ in playlist.segments)]:
            joined.write((folder / str(name)).read_bytes())
    return dest


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


class LocalBucket:
    """The one S3 call the thumbnail service makes, ``get_object``, answered from a local folder
    (keys are paths under ``root``)."""

    def __init__(self, root: Path):
        self.root = root

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803 - boto3's names
        path = self.root / Key
        if not path.is_file():
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        data = path.read_bytes()
        return {"Body": io.BytesIO(data), "ContentLength": len(data), "LastModified": datetime.now(timezone.utc)}


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Bench:
    """One run of the benchmark: the source, its ladder and where everything is written."""

    def __init__(self, source_name: str, ladder: str | None, repeats: int, work: Path, audio_seconds: float,
                 loudness: float, say=print):
        self.say, self.work, self.repeats = say, work, repeats
        self.case = probe_source(source_name, ensure_source(source_name, log=say))
        self.source = str(self.case.path)
        self.info = self.case.info
        self.config = ladder_config(ladder)
        self.loud = replace(self.config, loudness=LoudnessTarget(loudness))
        self.plan = plan_for(self.case, self.config)
        self.settings = PixelFlowSettings(scratch_dir=work / "thumbnail-scratch")
        smallest = min(self.plan, key=lambda r: r.width * r.height)
        self.board = Storyboard.plan(self.info.duration, smallest.width, smallest.height,
                                     interval=self.settings.storyboard_interval or 5,
                                     tile_width=self.settings.storyboard_tile_width,
                                     max_tiles=self.settings.storyboard_max_tiles)
        self.poster = poster_rendition(self.plan)
        self.download = download_renditions(self.plan, "highest", self.settings.mp4_max_rung)[-1]
        self.audio_only = probe_source("audio-only", ensure_audio_source(audio_seconds, log=say))
        self.result: dict = {
            "source": source_name, "duration": self.info.duration, "ladder": [r.name for r in self.plan],
            "repeats": repeats, "poster_rung": self.poster.name, "download_rung": self.download.name,
            "storyboard": {"tiles": self.board.count, "interval": self.board.interval,
                           "tile": f"{self.board.tile_width}x{self.board.tile_height}"},
            "loudness_target": loudness, "audio_only_seconds": self.audio_only.info.duration,
            "machine": machine(),
        }

    def log(self, label: str, repeat: int) -> Path:
        return self.work / "logs" / f"{label}-r{repeat}.log"

    def ladder_command(self, variant: str) -> list[str]:
        out = fresh_dir(self.work / "ladder" / variant)
        dirs = [str(fresh_dir(out / r.name)) for r in self.plan]
        audio = str(fresh_dir(out / "audio"))
        poster = (self.poster, str(out / "poster.jpg")) if variant in ("poster", "both") else None
        board = (self.board, str(out / "storyboard.jpg")) if variant in ("storyboard", "both") else None
        config = self.loud if variant == "loudness" else self.config
        return ladder_encode_args(self.source, self.info, self.plan, config, dirs, audio, poster, board)

    def alone_command(self, variant: str) -> list[str]:
        out = fresh_dir(self.work / "alone" / variant)
        if variant == "storyboard_alone":
            return storyboard_args(self.source, self.info, self.board, str(out / "storyboard.jpg"))
        if variant == "poster_alone":
            return poster_args(self.source, self.info, self.poster, str(out / "poster.jpg"))
        return encode_args(self.source, self.info, self.download, self.config, str(out))  # "rung_alone"

    def encodes(self) -> dict[str, list[Measurement]]:
        """Section 1 (and the rung's encode alone, for section 2), interleaved."""
        names = [*LADDER_VARIANTS, *ALONE_VARIANTS, "rung_alone"]
        runs: dict[str, list[Measurement]] = {name: [] for name in names}
        for repeat in range(self.repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                self.say(f"repeat {repeat + 1}/{self.repeats}: {name} ...")
                command = self.ladder_command(name) if name in LADDER_VARIANTS else self.alone_command(name)
                runs[name].append(measured([command], self.log(name, repeat)))
        for image in ("poster.jpg", "storyboard.jpg"):
            if not (self.work / "ladder" / "both" / image).stat().st_size:
                raise RuntimeError(f"the ladder process wrote no {image}")
        base = runs["ladder"]
        section = {"ladder": {**summary(base), "what": LADDER_VARIANTS["ladder"]}}
        for name, what in {**LADDER_VARIANTS, **ALONE_VARIANTS}.items():
            if name != "ladder":  # a process of its own adds all it costs
                more = added(base, runs[name]) if name in LADDER_VARIANTS else alone(base, runs[name])
                section[name] = {**summary(runs[name]), "what": what, "added": more}
        self.result["ladder_process"] = section
        return runs

    def downloads(self, encodes: dict[str, list[Measurement]]) -> None:
        """Section 2: the MP4 of the download rung, joined and remuxed from the ladder's output."""
        source = self.work / "ladder" / "ladder"
        out = fresh_dir(self.work / "download")
        mp4 = out / f"{self.download.name}.mp4"
        runs, joins = [], []
        for repeat in range(self.repeats):
            self.say(f"repeat {repeat + 1}/{self.repeats}: MP4 download of {self.download.name} ...")
            started = time.monotonic()
            video = join_rendition(source / self.download.name, out / f"{self.download.name}.video.mp4")
            audio = join_rendition(source / "audio", out / f"{self.download.name}.audio.mp4")
            joins.append(time.monotonic() - started)
            runs.append(measured([remux_args(str(video), str(audio), str(mp4))], self.log("download", repeat)))
        hls = folder_bytes(source / self.download.name) + folder_bytes(source / "audio")
        self.result["download"] = {
            "rung": self.download.name, **summary(runs), "join_wall": round(statistics.median(joins), 3),
            "bytes": mp4.stat().st_size, "hls_bytes": hls,
            "rung_alone": summary(encodes["rung_alone"]),
            "against_rung_alone": ratio(runs, encodes["rung_alone"]), "against_ladder": ratio(runs, encodes["ladder"]),
        }

    def publish_locally(self) -> tuple[LocalBucket, dict]:
        """The ladder's output laid out as a published asset under a local folder, with a
        manifest naming its video renditions; the bucket and the manifest."""
        root = fresh_dir(self.work / "bucket")
        layout = self.settings.layout(ASSET_ID)
        asset = root / layout.key("")
        asset.mkdir(parents=True)
        for r in self.plan:
            (asset / r.name).symlink_to(self.work / "ladder" / "ladder" / r.name)
        manifest = {"duration": self.info.duration, "renditions": [
            {"name": r.name, "width": r.width, "height": r.height, "playlist": f"{r.name}/{PLAYLIST}",
             "frame_rate": r.fps_float} for r in self.plan]}
        (root / layout.manifest_key).write_text(json.dumps(manifest))
        return LocalBucket(root), manifest

    def thumbnails(self) -> None:
        """Section 3: thumbnail requests through the thumbnail service, cold then cached."""
        bucket, manifest = self.publish_locally()
        middle = f"{self.info.duration / 2:.3f}"
        requests = [("jpg", {"time": middle, "width": "320"}), ("webp", {"time": middle, "width": "320"}),
                    ("jpg", {})]  # no size, no time: the poster rung's size at the poster's time
        rows = []
        for fmt, query in requests:
            cold_wall, cold_cpu, hits = [], [], []
            for _ in range(self.repeats):
                service = ThumbnailService(self.settings, bucket)
                started, cpu = time.perf_counter(), _cpu_seconds()
                image = service.get(ASSET_ID, fmt, query)
                cold_wall.append(time.perf_counter() - started)
                cold_cpu.append(_cpu_seconds() - cpu)
                for _ in range(5):
                    started = time.perf_counter()
                    service.get(ASSET_ID, fmt, query)
                    hits.append(time.perf_counter() - started)
                assert service.ffmpeg_runs == 1
            plan = plan_thumbnail(manifest, fmt, query, max_width=self.settings.thumbnail_max_width)
            rows.append({"format": fmt, "query": query, "bytes": len(image.body), "rendition": plan.rendition["name"],
                         "size": f"{plan.width}x{plan.height}",
                         "cold_wall": round(statistics.median(cold_wall), 4),
                         "cold_cpu": round(statistics.median(cold_cpu), 4),
                         "hit_wall": round(statistics.median(hits), 6)})
            self.say(f"thumbnail {fmt} {query}: {rows[-1]['cold_wall'] * 1000:.0f} ms cold")
        self.result["thumbnails"] = rows

    def audio(self) -> None:
        """Sections 4 and 5: the audio rendition plain, measured and normalised, on the source's
        audio and on the audio-only source; the audio-only asset's M4A download."""
        sources = {"video": self.case, "audio_only": self.audio_only}
        runs: dict[str, dict[str, list[Measurement]]] = {key: {"plain": [], "measure": [], "normalised": []}
                                                         for key in sources}
        m4a = []
        for repeat in range(self.repeats):
            for key, case in sources.items():
                self.say(f"repeat {repeat + 1}/{self.repeats}: {key} audio plain, measured, normalised ...")
                source, out = str(case.path), self.work / "audio" / key
                runs[key]["plain"].append(measured([audio_args(source, case.info, self.config,
                                                               str(fresh_dir(out / "plain")))],
                                                   self.log(f"{key}-plain", repeat)))
                log = self.log(f"{key}-measure", repeat)
                runs[key]["measure"].append(measured([loudness_measure_args(source, case.info, self.loud)], log))
                loudness = parse_loudnorm(log.read_text().splitlines())
                runs[key]["normalised"].append(measured(
                    [audio_args(source, case.info, self.loud, str(fresh_dir(out / "normalised")), loudness)],
                    self.log(f"{key}-normalised", repeat)))
            joined = join_rendition(self.work / "audio" / "audio_only" / "plain", self.work / "audio" / "joined.mp4")
            m4a.append(measured([remux_args(None, str(joined), str(self.work / "audio" / "audio.m4a"))],
                                self.log("m4a", repeat)))
        section = {}
        for key, case in sources.items():
            minutes = case.info.duration / 60
            plain = runs[key]["plain"]
            section[key] = {"seconds": case.info.duration}
            for name, found in runs[key].items():
                medians = summary(found)
                section[key][name] = {**medians, "against_plain": ratio(found, plain),
                                      "wall_per_minute": round(medians["wall"] / minutes, 3),
                                      "cpu_per_minute": round(medians["cpu"] / minutes, 3)}
        section["in_ladder"] = self.result["ladder_process"]["loudness"]["added"]
        self.result["loudness"] = section
        self.result["audio_only"] = {"rendition": section["audio_only"]["plain"],
                                     "m4a": {**summary(m4a), "bytes": (self.work / "audio" / "audio.m4a").stat().st_size}}

    def run(self) -> dict:
        encodes = self.encodes()
        self.downloads(encodes)
        self.thumbnails()
        self.audio()
        self.result["machine"]["load_average_end"] = machine()["load_average"]
        return self.result


def _spread(row: dict, key: str) -> str:
    values = row[key]
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def _load(result: dict) -> str:
    m = result["machine"]
    return f"{m['load_average'][0]:.1f} at the start, {m['load_average_end'][0]:.1f} at the end"


def markdown(result: dict) -> str:
    """The results as the tables of docs/bench.md."""
    ladder = result["ladder_process"]
    base = ladder["ladder"]
    board = result["storyboard"]
    lines = [f"Source `{result['source']}` ({result['duration']:.0f} s), rungs {', '.join(result['ladder'])}, "
             f"poster from {result['poster_rung']}, storyboard of {board['tiles']} tiles of {board['tile']} "
             f"(one every {board['interval']} s); medians of {result['repeats']} interleaved repeat(s).", "",
             "| Ladder process | Wall (s), median (min–max) | CPU (s), median (min–max) | Added wall | Added CPU | "
             "Peak memory (MiB) |", "|---|---|---|---|---|---|",
             f"| {base['what']} | {_spread(base, 'walls')} | {_spread(base, 'cpus')} | | | {base['max_rss'] >> 20} |"]
    for name, row in ladder.items():
        if name != "ladder":
            more = row["added"]
            lines.append(f"| {row['what']} | {_spread(row, 'walls')} | {_spread(row, 'cpus')} | {more['wall']:+.2f} s "
                         f"({more['wall_percent']:+.1f} %) | {more['cpu']:+.2f} s ({more['cpu_percent']:+.1f} %) | "
                         f"{row['max_rss'] >> 20} |")
    shared, second = ladder["storyboard"]["added"], ladder["storyboard_alone"]["added"]
    noise = {key: percent(max(base[key]) - min(base[key]), statistics.median(base[key])) for key in ("walls", "cpus")}
    lines += ["", f"Repeats of the ladder process alone spanned {noise['walls']:.1f} % of its wall time and "
                  f"{noise['cpus']:.1f} % of its CPU time. The storyboard from the ladder's pictures adds "
                  f"{shared['wall']:+.2f} s wall, {shared['cpu']:+.2f} s CPU; in a process of its own (decoding the "
                  f"source again) it would add {second['wall']:.2f} s wall, {second['cpu']:.2f} s CPU "
                  f"({second['cpu_percent']:.1f} % of the ladder's CPU). Load average {_load(result)}."]
    d = result["download"]
    lines += ["", "| MP4 download | Wall (s) | CPU (s) | Against the rung's encode alone (wall, CPU) | "
                  "Against the ladder process (wall) | Size |", "|---|---|---|---|---|---|",
              f"| {d['rung']} + audio: segments joined (Python) | {d['join_wall']:.3f} | | | | |",
              f"| {d['rung']} + audio: remuxed, faststart | {d['wall']:.3f} | {d['cpu']:.3f} | "
              f"{d['against_rung_alone']['wall']:.1%}, {d['against_rung_alone']['cpu']:.1%} | "
              f"{d['against_ladder']['wall']:.1%} | {d['bytes'] / 2**20:.1f} MiB (HLS: {d['hls_bytes'] / 2**20:.1f} MiB) |",
              f"| ({d['rung']} encoded alone from the source, for the ratio) | {d['rung_alone']['wall']:.2f} | "
              f"{d['rung_alone']['cpu']:.2f} | | | |"]
    lines += ["", "| Thumbnail request | From | Cold wall (ms) | Cold CPU (ms) | Cached hit (ms) | Size |",
              "|---|---|---|---|---|---|"]
    for t in result["thumbnails"]:
        query = ", ".join(f"{k}={v}" for k, v in t["query"].items()) or "defaults (poster's time and size)"
        lines.append(f"| {t['format']}, {query} | {t['rendition']} ({t['size']}) | {t['cold_wall'] * 1000:.0f} | "
                     f"{t['cold_cpu'] * 1000:.0f} | {t['hit_wall'] * 1000:.2f} | {t['bytes'] / 1024:.1f} KiB |")
    loud = result["loudness"]
    lines += ["", f"| Audio (loudness target {result['loudness_target']:g} LUFS) | Wall (s) | CPU (s) | "
                  "Against plain (wall, CPU) | Wall per minute of audio (s) |", "|---|---|---|---|---|"]
    names = {"plain": "audio rendition, plain", "measure": "loudness measured alone (first pass)",
             "normalised": "audio rendition normalised (second pass)"}
    for key, label in (("video", f"`{result['source']}`"), ("audio_only", "audio-only source")):
        for name, text in names.items():
            row = loud[key][name]
            against = "" if name == "plain" else f"{row['against_plain']['wall']:.2f}x, {row['against_plain']['cpu']:.2f}x"
            lines.append(f"| {label} ({loud[key]['seconds']:.0f} s): {text} | {row['wall']:.3f} | {row['cpu']:.3f} | "
                         f"{against} | {row['wall_per_minute']:.3f} |")
    m4a = result["audio_only"]["m4a"]
    lines.append(f"| audio-only source: M4A download (remux) | {m4a['wall']:.3f} | {m4a['cpu']:.3f} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outputs", description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="4k10", help=f"the source (known: {', '.join(SOURCES)})")
    parser.add_argument("--ladder", default=None, help="rung heights (default: PixelFlow's default ladder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--audio-seconds", type=float, default=60.0, help="length of the audio-only source")
    parser.add_argument("--loudness", type=float, default=-16.0, help="loudness target, LUFS")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = results_dir(args.work, RESULTS, "outputs")
    result = Bench(args.source, args.ladder, args.repeats, work, args.audio_seconds, args.loudness).run()
    result["command"] = " ".join(["python -m bench.outputs", *(argv if argv is not None else sys.argv[1:])])
    write_results(work, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
