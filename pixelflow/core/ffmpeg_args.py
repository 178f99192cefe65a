"""Every FFmpeg command PixelFlow runs, built as argument lists in one place.

Inputs are always local files we downloaded, opened through the ``file`` protocol only
(``-protocol_whitelist file``) with the demuxer forced to the one validation accepted, so an
upload can never make FFmpeg read another file or reach the network. Paths are passed as
``file:`` URLs, so a name can never be read as an option.

Encoding model: one **ladder process** (:func:`ladder_encode_args`) reads the source once,
scales it for every rung (:func:`ladder_graph`) and encodes every rung, the audio rendition and
the poster frame. Decoding and scaling a 4K source is most of the work, so it is done once, not
once per rung. A rung can also be encoded alone, straight from the source (:func:`encode_args`),
which a retry of a single rung uses.

Example:
    >>> from fractions import Fraction
    >>> from pixelflow.core.ladder import LadderConfig, Rendition
    >>> from pixelflow.core.probe import interpret_probe
    >>> info = interpret_probe({"format": {"format_name": "mov", "duration": "2"}, "streams": [
    ...     {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 640, "height": 360,
    ...      "r_frame_rate": "30/1", "pix_fmt": "yuv420p"}]})
    >>> r = Rendition("360p", 360, 640, 360, Fraction(30), 900, 1800, 60)
    >>> args = encode_args("/s/source", info, r, LadderConfig(), "/s/out/360p")
    >>> args[:4]
    ['ffmpeg', '-hide_banner', '-nostdin', '-y']
    >>> "-sc_threshold" in args and "libx264" in args
    True
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pixelflow.core.chunks import Chunk, chunk_input_args, chunk_output_args
from pixelflow.core.ladder import LadderConfig, Rendition
from pixelflow.core.loudness import Loudnorm, LoudnessTarget, measure_filter, normalise_filter
from pixelflow.core.probe import SourceInfo
from pixelflow.core.storyboard import Storyboard

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

#: HLS file names inside a rendition folder.
PLAYLIST = "index.m3u8"
INIT_SEGMENT = "init.mp4"
SEGMENT_PATTERN = "seg_%05d.m4s"


def file_url(path: str) -> str:
    """A local path as an FFmpeg ``file:`` URL (never parsed as an option or another protocol).

    >>> file_url("/tmp/x/source")
    'file:/tmp/x/source'
    """
    if not str(path).startswith("/"):
        raise ValueError("FFmpeg paths must be absolute local paths")
    return f"file:{path}"


def base_args(progress: bool = True, log_level: str = "error") -> list[str]:
    """The head of every FFmpeg command. Its messages come tagged with their level
    (``level+``); a command reading ``loudnorm``'s measurement asks for ``info``, where the
    filter prints it, and :func:`pixelflow.pipeline.ffmpeg.run_ffmpeg` keeps those lines apart
    from the errors.

    >>> base_args(progress=False, log_level="info")[-1]
    'level+info'
    """
    args = [FFMPEG, "-hide_banner", "-nostdin", "-y", "-loglevel", f"level+{log_level}"]
    if progress:
        args += ["-progress", "pipe:1", "-nostats"]
    return args


def input_args(path: str, demuxer: str, extra: list[str] | None = None, max_pixels: int | None = None) -> list[str]:
    """Open one local file with a forced demuxer and nothing but the file protocol; with
    ``max_pixels``, its decoders refuse any frame larger than that (``-max_pixels``).

    >>> input_args("/s/source", "mov", max_pixels=100)[:6]
    ['-protocol_whitelist', 'file', '-format_whitelist', 'mov', '-max_pixels', '100']
    """
    limit = ["-max_pixels", str(max_pixels)] if max_pixels else []
    return ["-protocol_whitelist", "file", "-format_whitelist", demuxer, *limit, *(extra or []), "-f", demuxer,
            "-i", file_url(path)]


#: Colour tags the HDR chain passes on as stated; anything else (often "unknown" on HDR files
#: tagged with their transfer only) is taken as the BT.2020 HDR default.
_HDR_PRIMARIES = ("bt2020", "bt709", "smpte431", "smpte432")
_HDR_MATRICES = ("bt2020nc", "bt2020c", "bt709")
_RANGES = ("tv", "pc")


def prefilters(info: SourceInfo) -> list[str]:
    """Filters every rung needs before scaling: deinterlacing, HDR tone mapping, 8-bit 4:2:0.

    * Interlaced sources (``field_order`` set) are deinterlaced with ``bwdif``, one frame per
      frame, only where frames are flagged interlaced.
    * HDR sources (PQ ``smpte2084`` or HLG ``arib-std-b67`` transfer) are tone mapped to SDR
      BT.709 with zimg (``zscale``) and ``tonemap=hable``. ``setparams`` first states the
      source's colour properties explicitly (BT.2020 where the file leaves them unknown), as
      zimg refuses to convert from unknown primaries or matrix ("no path between colorspaces").

    The rung filters then scale and convert to 8-bit ``yuv420p``.

    Example:
        >>> from pixelflow.core.probe import interpret_probe
        >>> info = interpret_probe({"format": {"format_name": "mov", "duration": "2"}, "streams": [
        ...     {"index": 0, "codec_type": "video", "codec_name": "hevc", "width": 3840, "height": 2160,
        ...      "r_frame_rate": "30/1", "pix_fmt": "yuv420p10le", "color_transfer": "smpte2084"}]})
        >>> prefilters(info)[0]
        'setparams=color_primaries=bt2020:color_trc=smpte2084:colorspace=bt2020nc:range=tv'
    """
    chain: list[str] = []
    video = info.video
    if video is None:
        return chain
    if video.interlaced:
        chain.append("bwdif=mode=send_frame:deint=interlaced")
    if video.hdr:
        primaries = video.color_primaries if video.color_primaries in _HDR_PRIMARIES else "bt2020"
        matrix = video.color_space if video.color_space in _HDR_MATRICES else "bt2020nc"
        color_range = video.color_range if video.color_range in _RANGES else "tv"
        chain += [
            f"setparams=color_primaries={primaries}:color_trc={video.color_transfer}:colorspace={matrix}:range={color_range}",
            "zscale=t=linear:npl=100",
            "format=gbrpf32le",
            "zscale=p=bt709",
            "tonemap=tonemap=hable:desat=0",
            "zscale=t=bt709:m=bt709:r=tv",
        ]
    return chain


def rung_filters(rendition: Rendition, fps_start: bool = False) -> list[str]:
    """Per-rung filters: frame rate, size (display aspect kept, square pixels), pixel format.
    With ``fps_start``, the rung's first picture is at the input's time 0 (a chunk's start:
    :func:`fps_filter`)."""
    return [
        fps_filter(rendition, fps_start),
        f"scale={rendition.width}:{rendition.height}:flags=bicubic",
        "setsar=1",
        "format=yuv420p",
    ]


def fps_filter(rendition: Rendition, fps_start: bool = False) -> str:
    """The rung's ``fps`` filter; with ``fps_start``, its pictures are timed from the input's
    time 0, a picture repeated there if the source has none (a chunk starting in a gap of a
    variable frame rate source), so every chunk of a rung starts on its cut.

    >>> from fractions import Fraction
    >>> fps_filter(Rendition("360p", 360, 640, 360, Fraction(30), 900, 1800, 60), fps_start=True)
    'fps=30/1:start_time=0'
    """
    return f"fps={rendition.fps_text}" + (":start_time=0" if fps_start else "")


def ladder_graph(info: SourceInfo, renditions: list[Rendition], fps_start: bool = False) -> tuple[str, list[str]]:
    """The ladder process's filter graph: every rung's pictures from one decode, and the output labels
    (``v0``, ``v1``, ... in the order of ``renditions``).

    Scaling is two-stage: the source is scaled once, to the largest rung, and each smaller rung
    is scaled from that picture. Only one scaler reads full-size (4K) frames, which on a 4K
    source takes about a quarter off the decode's CPU time against scaling every rung from the
    source, for an SSIM change under 0.0005 (see ``bench/``). When a smaller rung would need a
    higher frame rate than the largest one, every rung is scaled from the source instead.

    Example:
        >>> from fractions import Fraction
        >>> from pixelflow.core.ladder import LadderConfig, plan_ladder
        >>> from pixelflow.core.probe import interpret_probe
        >>> info = interpret_probe({"format": {"format_name": "mov", "duration": "2"}, "streams": [
        ...     {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 3840, "height": 2160,
        ...      "r_frame_rate": "30/1", "pix_fmt": "yuv420p"}]})
        >>> graph, labels = ladder_graph(info, plan_ladder(3840, 2160, Fraction(30), LadderConfig()))
        >>> for chain in graph.split(";"):
        ...     print(chain)
        [0:0]fps=30/1,scale=1920:1080:flags=bicubic,split=4[top][s0][s1][s2]
        [top]setsar=1,format=yuv420p[v3]
        [s0]fps=30/1,scale=640:360:flags=bicubic,setsar=1,format=yuv420p[v0]
        [s1]fps=30/1,scale=854:480:flags=bicubic,setsar=1,format=yuv420p[v1]
        [s2]fps=30/1,scale=1280:720:flags=bicubic,setsar=1,format=yuv420p[v2]
        >>> labels
        ['v0', 'v1', 'v2', 'v3']
    """
    if not renditions:
        raise ValueError("no renditions")
    assert info.video is not None
    labels = [f"v{i}" for i in range(len(renditions))]
    pre = prefilters(info)
    source = f"[0:{info.video.index}]"
    if len(renditions) == 1:
        return source + ",".join(pre + rung_filters(renditions[0], fps_start)) + "[v0]", labels
    top = max(range(len(renditions)), key=lambda i: renditions[i].width * renditions[i].height)
    rest = [i for i in range(len(renditions)) if i != top]
    largest = renditions[top]
    if all(renditions[i].fps <= largest.fps and renditions[i].width <= largest.width
           and renditions[i].height <= largest.height for i in rest):
        first = pre + [fps_filter(largest, fps_start), f"scale={largest.width}:{largest.height}:flags=bicubic",
                       f"split={len(renditions)}"]
        chains = [source + ",".join(first) + "[top]" + "".join(f"[s{i}]" for i in rest),
                  f"[top]setsar=1,format=yuv420p[{labels[top]}]"]
        chains += [f"[s{i}]" + ",".join(rung_filters(renditions[i], fps_start)) + f"[{labels[i]}]" for i in rest]
        return ";".join(chains), labels
    head = source + ",".join(pre + [f"split={len(renditions)}"]) + "".join(f"[s{i}]" for i in range(len(renditions)))
    chains = [head] + [f"[s{i}]" + ",".join(rung_filters(r, fps_start)) + f"[{labels[i]}]" for i, r in enumerate(renditions)]
    return ";".join(chains), labels


def ladder_encode_args(source: str, info: SourceInfo, renditions: list[Rendition], config: LadderConfig,
                       out_dirs: list[str], audio_dir: str | None = None,
                       poster: tuple[Rendition, str] | None = None,
                       storyboard: tuple[Storyboard, str] | None = None) -> list[str]:
    """One FFmpeg process for the whole ladder: one decode, the :func:`ladder_graph` pictures,
    and one libx264 encoder and HLS output per rung, written to ``out_dirs`` (in the order of
    ``renditions``): the same outputs as one :func:`encode_args` per rung. Rotation metadata is
    applied by FFmpeg's autorotation before the filter graph. With ``audio_dir``, the audio
    rendition (:func:`audio_output_args`) comes from the same read of the source; when the
    ladder normalises loudness (``config.loudness``), that read measures the audio instead
    (:func:`loudness_measure_output_args`) and the rendition is encoded afterwards by
    :func:`audio_args`, from the measurement, in an audio-only process. With
    ``poster`` (one of ``renditions`` and a JPEG path), the poster frame (:func:`poster_frame`) is
    taken from that rung's pictures: no second decode, no seek. With ``storyboard`` (a layout and
    a JPEG path), the storyboard sheet is made from the smallest rung's pictures.

    Example:
        >>> from fractions import Fraction
        >>> from pixelflow.core.ladder import LadderConfig, plan_ladder
        >>> from pixelflow.core.probe import interpret_probe
        >>> info = interpret_probe({"format": {"format_name": "mov", "duration": "2"}, "streams": [
        ...     {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080,
        ...      "r_frame_rate": "30/1", "pix_fmt": "yuv420p"}]})
        >>> plan = plan_ladder(1920, 1080, Fraction(30), LadderConfig(heights=(360, 720)))
        >>> args = ladder_encode_args("/s/source", info, plan, LadderConfig(), ["/o/360p", "/o/720p"])
        >>> [args[i + 1] for i, a in enumerate(args) if a == "-map"]
        ['[v0]', '[v1]']
        >>> [a for a in args if a.endswith("index.m3u8")]
        ['/o/360p/index.m3u8', '/o/720p/index.m3u8']
        >>> args = ladder_encode_args("/s/source", info, plan, LadderConfig(), ["/o/360p", "/o/720p"],
        ...                           poster=(plan[1], "/o/poster.jpg"))
        >>> args[args.index("-filter_complex") + 1].split(";")[-2:]
        ['[v1]split=2[v1e][poster]', "[poster]select='eq(n,6)',format=yuvj420p[jpeg]"]
        >>> [args[i + 1] for i, a in enumerate(args) if a == "-map"], args[-1]
        (['[v0]', '[v1e]', '[jpeg]'], 'file:/o/poster.jpg')
        >>> from pixelflow.core.storyboard import Storyboard
        >>> board = Storyboard.plan(2.0, 640, 360, interval=1)
        >>> args = ladder_encode_args("/s/source", info, plan, LadderConfig(), ["/o/360p", "/o/720p"],
        ...                           storyboard=(board, "/o/storyboard.jpg"))
        >>> chains = args[args.index("-filter_complex") + 1].split(";")
        >>> chains[-2]
        '[v0]split=2[v0e][board]'
        >>> chains[-1].startswith("[board]setpts=PTS-STARTPTS,select=") and chains[-1].endswith(",setpts=0[sheet]")
        True
        >>> [args[i + 1] for i, a in enumerate(args) if a == "-map"], args[-1]
        (['[v0e]', '[v1]', '[sheet]'], 'file:/o/storyboard.jpg')
    """
    if len(renditions) != len(out_dirs) or not renditions:
        raise ValueError("one output folder per rendition")
    graph, labels = ladder_graph(info, renditions)
    # Taps on a rung's pictures: (rung index, tap label, filter chain, output label, output path).
    taps: list[tuple[int, str, str, str, str]] = []
    if poster is not None:
        i = [r.name for r in renditions].index(poster[0].name)
        taps.append((i, "poster", f"select='eq(n,{poster_frame(info, poster[0])})',format=yuvj420p", "jpeg", poster[1]))
    if storyboard is not None:
        i = min(range(len(renditions)), key=lambda n: renditions[n].width * renditions[n].height)
        taps.append((i, "board", storyboard[0].filter(), "sheet", storyboard[1]))
    maps = [f"[{label}]" for label in labels]
    for i in sorted({tap[0] for tap in taps}):
        mine = [tap for tap in taps if tap[0] == i]
        graph += f";[{labels[i]}]split={len(mine) + 1}[{labels[i]}e]" + "".join(f"[{tap[1]}]" for tap in mine)
        maps[i] = f"[{labels[i]}e]"
    graph += "".join(f";[{tap[1]}]{tap[2]}[{tap[3]}]" for tap in taps)
    measure = audio_dir is not None and config.loudness is not None
    args = (base_args(log_level="info" if measure else "error")
            + input_args(source, info.demuxer, max_pixels=config.decode_max_pixels) + ["-filter_complex", graph])
    for label, rendition, out_dir in zip(maps, renditions, out_dirs):
        args += ["-map", label] + rung_output_args(rendition, config, out_dir)
    if audio_dir is not None:
        if info.audio is None:
            raise ValueError("the source has no audio stream")
        args += ["-map", f"0:{info.audio.index}"] + (loudness_measure_output_args(config.loudness) if measure
                                                      else audio_output_args(config, audio_dir))
    for tap in taps:
        args += ["-map", f"[{tap[3]}]"] + poster_output_args(tap[4])
    return args


#: Keep only the mapped stream: no other tracks, metadata or chapters of the source.
_ONLY_MAPPED = ["-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1"]


def rung_output_args(rendition: Rendition, config: LadderConfig, out_dir: str, chunk: Chunk | None = None) -> list[str]:
    """One rung's output, after its ``-map``: libx264 video only, as fMP4 HLS in ``out_dir``;
    with ``chunk``, that chunk's part of the rendition (:mod:`pixelflow.core.chunks`)."""
    return (["-an", *_ONLY_MAPPED] + x264_args(rendition, config)
            + hls_output_args(config, out_dir, chunk_output_args(chunk) if chunk is not None else []))


def audio_output_args(config: LadderConfig, out_dir: str) -> list[str]:
    """The audio rendition's output, after its ``-map``: stereo AAC only, as fMP4 HLS in ``out_dir``."""
    return ["-vn", *_ONLY_MAPPED, "-c:a", "aac", "-b:a", f"{config.audio_bitrate_kbps}k", "-ac", "2", "-ar", "48000",
            *hls_output_args(config, out_dir)]


def loudness_measure_output_args(target: LoudnessTarget) -> list[str]:
    """An audio output, after its ``-map``, that only measures loudness: ``loudnorm`` printing its
    measurement (:func:`pixelflow.core.loudness.measure_filter`) to a null output.

    >>> loudness_measure_output_args(LoudnessTarget(-23))[-4:]
    ['loudnorm=I=-23:TP=-1.5:LRA=11:print_format=json', '-f', 'null', '-']
    """
    return ["-vn", *_ONLY_MAPPED, "-filter:a", measure_filter(target), "-f", "null", "-"]


def hls_output_args(config: LadderConfig, out_dir: str, extra: list[str] | None = None) -> list[str]:
    out = PurePosixPath(out_dir)
    return [*(extra or []),
        "-f", "hls",
        "-hls_time", f"{config.segment_seconds:g}",
        "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4",
        "-hls_flags", "independent_segments",
        "-hls_fmp4_init_filename", INIT_SEGMENT,
        "-hls_segment_filename", str(out / SEGMENT_PATTERN),
        str(out / PLAYLIST),
    ]


def x264_args(rendition: Rendition, config: LadderConfig) -> list[str]:
    """libx264 settings: capped CRF, fixed GOP, no scene-cut keyframes, keyframes forced on the
    same timeline as every other rung."""
    return [
        "-c:v", "libx264",
        "-preset", config.preset,
        "-profile:v", "high",
        "-pix_fmt", "yuv420p",
        "-crf", str(config.crf),
        "-maxrate", f"{rendition.maxrate_kbps}k",
        "-bufsize", f"{rendition.bufsize_kbps}k",
        "-g", str(rendition.gop_frames),
        "-keyint_min", str(rendition.gop_frames),
        "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{config.gop_seconds:g})",
        "-threads", str(config.threads),
        "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
    ]


def encode_args(source: str, info: SourceInfo, rendition: Rendition, config: LadderConfig, out_dir: str) -> list[str]:
    """Encode one rung alone to fMP4 HLS, decoding and scaling the source itself (a rung's retry)."""
    assert info.video is not None
    chain = ",".join(prefilters(info) + rung_filters(rendition))
    return (base_args() + input_args(source, info.demuxer, max_pixels=config.decode_max_pixels)
            + ["-map", f"0:{info.video.index}", "-filter:v", chain]
            + rung_output_args(rendition, config, out_dir))


def chunk_encode_args(source: str, info: SourceInfo, renditions: list[Rendition], config: LadderConfig,
                      out_dirs: list[str], chunk: Chunk) -> list[str]:
    """One chunk of a long source (:mod:`pixelflow.core.chunks`): one decode of its range and
    every rung's part of the rendition, each written to its folder of ``out_dirs``, with the
    encoder settings of :func:`ladder_encode_args` (video only: the audio is encoded once, for
    the whole file).

    Example:
        >>> from fractions import Fraction
        >>> from pixelflow.core.ladder import plan_ladder
        >>> from pixelflow.core.probe import interpret_probe
        >>> info = interpret_probe({"format": {"format_name": "mov", "duration": "20"}, "streams": [
        ...     {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 1280, "height": 720,
        ...      "r_frame_rate": "30/1", "pix_fmt": "yuv420p"}]})
        >>> plan = plan_ladder(1280, 720, Fraction(30), LadderConfig(heights=(360, 720)))
        >>> chunk = Chunk(1, 8_000_000, 16_000_000, 2, 2)
        >>> args = chunk_encode_args("/s/source", info, plan, LadderConfig(), ["/o/360p", "/o/720p"], chunk)
        >>> args[args.index("-i") - 6:args.index("-i") - 2]
        ['-ss', '8.000000', '-t', '8.000000']
        >>> args[args.index("-filter_complex") + 1].split(";")[0]
        '[0:0]fps=30/1:start_time=0,scale=1280:720:flags=bicubic,split=2[top][s0]'
        >>> [args[i + 1] for i, a in enumerate(args) if a in ("-start_number", "-output_ts_offset")]
        ['2', '8.000000', '2', '8.000000']
    """
    if len(renditions) != len(out_dirs) or not renditions:
        raise ValueError("one output folder per rendition")
    graph, labels = ladder_graph(info, renditions, fps_start=chunk.start_us > 0)
    args = (base_args() + input_args(source, info.demuxer, chunk_input_args(chunk), max_pixels=config.decode_max_pixels)
            + ["-filter_complex", graph])
    for label, rendition, out_dir in zip(labels, renditions, out_dirs):
        args += ["-map", f"[{label}]"] + rung_output_args(rendition, config, out_dir, chunk)
    return args


def audio_input_args(source: str, info: SourceInfo, config: LadderConfig, log_level: str = "error") -> list[str]:
    """A command reading the source's default (else first) audio stream alone: the other streams
    are demuxed and dropped, never decoded."""
    assert info.audio is not None
    return (base_args(log_level=log_level) + input_args(source, info.demuxer, max_pixels=config.decode_max_pixels)
            + ["-map", f"0:{info.audio.index}"])


def audio_args(source: str, info: SourceInfo, config: LadderConfig, out_dir: str,
               measured: Loudnorm | None = None) -> list[str]:
    """The audio rendition (stereo AAC), from the source's default (else first) audio stream.

    With ``config.loudness`` and the source's ``measured`` loudness (the first pass), the audio
    goes through ``loudnorm``'s second pass (:func:`pixelflow.core.loudness.normalise_filter`),
    which prints what it did; silence is encoded as it is.

    >>> from pixelflow.core.loudness import EXAMPLE_LOG, parse_loudnorm
    >>> from pixelflow.core.probe import interpret_probe
    >>> info = interpret_probe({"format": {"format_name": "mp3", "duration": "2"}, "streams": [
    ...     {"index": 0, "codec_type": "audio", "codec_name": "mp3", "channels": 2, "sample_rate": "44100"}]})
    >>> config = LadderConfig(loudness=LoudnessTarget(-16))
    >>> args = audio_args("/s/source", info, config, "/o/audio", parse_loudnorm(EXAMPLE_LOG.splitlines()))
    >>> args[args.index("-filter:a") + 1].startswith("loudnorm=I=-16:TP=-1.5:LRA=11:measured_I=-51.76")
    True
    >>> audio_args("/s/source", info, config, "/o/audio") == audio_args("/s/source", info, LadderConfig(), "/o/audio")
    True
    """
    normalise = config.loudness is not None and measured is not None and not measured.silent
    if not normalise:
        return audio_input_args(source, info, config) + audio_output_args(config, out_dir)
    return (audio_input_args(source, info, config, log_level="info")
            + ["-filter:a", normalise_filter(config.loudness, measured)] + audio_output_args(config, out_dir))


def loudness_measure_args(source: str, info: SourceInfo, config: LadderConfig) -> list[str]:
    """The first ``loudnorm`` pass alone, over the audio stream only (no video decoded): when the
    ladder process did not measure it (a retry, an audio-only source).

    >>> from pixelflow.core.probe import interpret_probe
    >>> info = interpret_probe({"format": {"format_name": "mov", "duration": "2"}, "streams": [
    ...     {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 640, "height": 360,
    ...      "r_frame_rate": "30/1", "pix_fmt": "yuv420p"},
    ...     {"index": 1, "codec_type": "audio", "codec_name": "aac", "channels": 2, "sample_rate": "48000"}]})
    >>> args = loudness_measure_args("/s/source", info, LadderConfig(loudness=LoudnessTarget(-16)))
    >>> args[args.index("-map"):args.index("-map") + 3]
    ['-map', '0:1', '-vn']
    """
    assert config.loudness is not None
    return audio_input_args(source, info, config, log_level="info") + loudness_measure_output_args(config.loudness)


def poster_time(info: SourceInfo) -> float:
    """When the poster frame is taken: at 10% of the duration, at most 10 s in."""
    return poster_seconds(info.duration)


def poster_seconds(duration: float) -> float:
    """:func:`poster_time` of a source of ``duration`` seconds.

    >>> poster_seconds(8.0), poster_seconds(600.0)
    (0.8, 10.0)
    """
    return max(0.0, min(duration * 0.1, 10.0))


def poster_frame(info: SourceInfo, rendition: Rendition) -> int:
    """The poster's frame number among ``rendition``'s pictures (at its frame rate)."""
    return int(poster_time(info) * float(rendition.fps))


def poster_output_args(out_path: str) -> list[str]:
    """The poster's output, after its ``-map``: one JPEG frame."""
    return ["-frames:v", "1", "-q:v", "3", "-f", "image2", "-update", "1", file_url(out_path)]


def poster_args(source: str, info: SourceInfo, rendition: Rendition, out_path: str,
                max_pixels: int | None = LadderConfig.decode_max_pixels) -> list[str]:
    """A JPEG poster frame at :func:`poster_time`, the size of ``rendition``, in a process of its
    own (seeking to it); :func:`ladder_encode_args` takes it from the ladder's pictures instead."""
    assert info.video is not None
    chain = ",".join(prefilters(info) + [f"scale={rendition.width}:{rendition.height}:flags=bicubic", "setsar=1", "format=yuvj420p"])
    args = (base_args(progress=False) + ["-ss", f"{poster_time(info):.3f}"]
            + input_args(source, info.demuxer, max_pixels=max_pixels))
    return args + ["-map", f"0:{info.video.index}", "-filter:v", chain] + poster_output_args(out_path)


def storyboard_args(source: str, info: SourceInfo, board: Storyboard, out_path: str,
                    max_pixels: int | None = LadderConfig.decode_max_pixels) -> list[str]:
    """The storyboard sheet in a process of its own, straight from the source (a retry);
    :func:`ladder_encode_args` makes it from the ladder's pictures instead."""
    assert info.video is not None
    chain = ",".join(prefilters(info) + [board.filter()])
    return (base_args(progress=False) + input_args(source, info.demuxer, max_pixels=max_pixels)
            + ["-map", f"0:{info.video.index}", "-filter:v", chain] + poster_output_args(out_path))


def storyboard_from_rendition_args(joined: str, board: Storyboard, out_path: str) -> list[str]:
    """The storyboard sheet from a finished rendition, ``joined`` (its init segment and segments as
    one fMP4 file, read with the ``mov`` demuxer and nothing but the file protocol): a chunked
    encode's smallest rung, whose pictures the sheet is made of, so that it costs no decode of
    the source.

    >>> board = Storyboard.plan(600.0, 640, 360, interval=5)
    >>> args = storyboard_from_rendition_args("/o/360p.mp4", board, "/o/storyboard.jpg")
    >>> args[args.index("-i") + 1:args.index("-i") + 4], args[-1]
    (['file:/o/360p.mp4', '-map', '0:v:0'], 'file:/o/storyboard.jpg')
    """
    return (base_args(progress=False) + input_args(joined, "mov") + ["-map", "0:v:0", "-filter:v", board.filter()]
            + poster_output_args(out_path))


def remux_args(video: str | None, audio: str | None, out_path: str) -> list[str]:
    """A progressive download from a rendition's fMP4 (its init segment and segments joined,
    ``video``) and the audio rendition's (``audio``), either of them alone: the streams copied,
    not re-encoded, the index moved to the front (``+faststart``) so that a browser plays it
    while it downloads.

    >>> remux_args("/o/1080p.video.mp4", "/o/audio.mp4", "/o/1080p.mp4")[-13:-7]
    ['-map', '0:v:0', '-map', '1:a:0', '-map_metadata', '-1']
    >>> remux_args(None, "/o/audio.mp4", "/o/audio.m4a")[-12:-7]
    ['file:/o/audio.mp4', '-map', '0:a:0', '-map_metadata', '-1']
    """
    inputs = [(path, kind) for path, kind in ((video, "v"), (audio, "a")) if path is not None]
    if not inputs:
        raise ValueError("nothing to remux")
    args, maps = base_args(progress=False), []
    for n, (path, kind) in enumerate(inputs):
        args += input_args(path, "mov")
        maps += ["-map", f"{n}:{kind}:0"]
    return args + maps + ["-map_metadata", "-1", "-f", "mp4", "-c", "copy", "-movflags", "+faststart",
                          file_url(out_path)]


def thumbnail_args(joined: str, offset: float, width: int, height: int, fmt: str, out_path: str) -> list[str]:
    """One picture of a published rendition, for ``GET .../thumbnail.<fmt>``: ``joined`` is the
    rendition's init segment followed by the one segment covering the time (an fMP4 file, read with
    the ``mov`` demuxer and nothing but the file protocol), ``offset`` seconds into that segment
    (an accurate seek: decoded from the segment's keyframe, pictures before ``offset`` dropped),
    scaled to ``width`` x ``height``; JPEG at the poster's quality, or WebP (libwebp).

    >>> args = thumbnail_args("/t/joined.mp4", 1.25, 320, 180, "jpg", "/t/out.jpg")
    >>> args[args.index("-i") + 1:args.index("-i") + 4]
    ['file:/t/joined.mp4', '-ss', '1.250']
    >>> args[-9:]
    ['-frames:v', '1', '-q:v', '3', '-f', 'image2', '-update', '1', 'file:/t/out.jpg']
    >>> thumbnail_args("/t/joined.mp4", 0, 320, 180, "webp", "/t/out.webp")[-7:]
    ['-frames:v', '1', '-c:v', 'libwebp', '-f', 'webp', 'file:/t/out.webp']
    """
    pixels = "yuvj420p" if fmt == "jpg" else "yuv420p"
    args = (base_args(progress=False) + input_args(joined, "mov") + ["-ss", f"{offset:.3f}", "-map", "0:v:0", "-an",
            "-filter:v", f"scale={width}:{height}:flags=bicubic,setsar=1,format={pixels}"])
    if fmt == "jpg":
        return args + poster_output_args(out_path)
    return args + ["-quality", "80", "-frames:v", "1", "-c:v", "libwebp", "-f", "webp", file_url(out_path)]


#: The only fields ffprobe is asked for: what :mod:`pixelflow.core.probe` reads (and the duration
#: measurement of :mod:`pixelflow.pipeline.ffmpeg`). No free-form tag but ``rotate``, so a file
#: with huge titles or comments gives a description of a few KiB.
PROBE_ENTRIES = ":".join([
    "format=format_name,duration,size,bit_rate",
    "stream=index,codec_type,codec_name,width,height,sample_aspect_ratio,r_frame_rate,avg_frame_rate,pix_fmt,"
    "bits_per_raw_sample,field_order,color_transfer,color_primaries,color_space,color_range,nb_frames,duration,"
    "channels,sample_rate",
    "stream_disposition=default,attached_pic",
    "stream_tags=rotate",
    "stream_side_data=rotation",
])


def probe_args(path: str, demuxer: str | None = None, formats: list[str] | None = None) -> list[str]:
    """ffprobe of a local file's headers as JSON: file protocol only, bounded analysis, only the
    :data:`PROBE_ENTRIES` fields, and either exactly ``demuxer`` or, when given, only the demuxers
    in ``formats`` (``format_whitelist``).

    >>> probe_args("/s/source", "mov")[-7:-4]
    ['-f', 'mov', '-show_entries']
    >>> probe_args("/s/source", "mov")[-3:]
    ['-of', 'json', 'file:/s/source']
    >>> args = probe_args("/s/source", formats=["mov", "webm"])
    >>> args[args.index("-format_whitelist") + 1]
    'mov,webm'
    """
    args = [FFPROBE, "-hide_banner", "-protocol_whitelist", "file", "-v", "error", "-probesize", "50000000",
            "-analyzeduration", "20000000"]
    if demuxer:
        args += ["-f", demuxer]
    elif formats is not None:
        args += ["-format_whitelist", ",".join(formats)]
    return args + ["-show_entries", PROBE_ENTRIES, "-of", "json", file_url(path)]


def measure_duration_args(path: str, demuxer: str) -> list[str]:
    """Read every packet of the first video stream once, without decoding (``-c copy`` to
    ``null``): the media time FFmpeg reports at the end is the duration of a file that states none.
    The input is held to the demuxer the probe found, like every other input: the file protocol
    only and ``format_whitelist`` with that one demuxer (so nothing the file names can open
    another demuxer or file).

    >>> measure_duration_args("/s/source", "webm")[-13:]
    ['-format_whitelist', 'webm', '-f', 'webm', '-i', 'file:/s/source', '-map', '0:v:0', '-c', 'copy', '-f', 'null', '-']
    """
    return [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "level+error", "-progress", "pipe:1", "-nostats",
            "-protocol_whitelist", "file", "-format_whitelist", demuxer, "-f", demuxer, "-i", file_url(path),
            "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
