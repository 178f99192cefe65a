"""Captions: WebVTT and SRT files validated, converted to safe WebVTT, and the master playlist's
subtitles group; every malformed file is ``invalid_captions`` with the reason."""

from __future__ import annotations

import pytest

from pixelflow.core.captions import (Captions, is_caption_key, load_captions, parse_captions, sidecar_key, sidecar_of,
                                     subtitle_entries, webvtt)
from pixelflow.core.hls import AudioEntry, VariantEntry, master_playlist, parse_master_playlist
from pixelflow.errors import ErrorCode, PixelFlowError

VTT = b"""WEBVTT - a talk
X-TIMESTAMP-MAP=MPEGTS:900000,LOCAL:00:00:00.000

STYLE
::cue { color: red }

NOTE written by hand

intro
00:02.000 --> 00:04.000 align:start position:10%
<v Roger>Second</v> <i>cue</i>

00:00:00.500 --> 00:00:01.500
First & <b>bold</b>
<script>alert(1)</script>
"""


def test_webvtt_keeps_timings_and_text_only_in_start_order():
    cues = parse_captions(VTT, "vtt", duration=10, name="talk.en.vtt")
    assert webvtt(cues) == ("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n"
                            "00:00:00.500 --> 00:00:01.500\nFirst &amp; <b>bold</b>\nalert(1)\n\n"
                            "00:00:02.000 --> 00:00:04.000\nSecond <i>cue</i>\n")


def test_srt_becomes_webvtt():
    srt = "\ufeff1\r\n00:00:01,000 --> 00:00:02,000\r\nHé <font color=\"red\">là</font>\r\n\r\n2\r\n" \
          "01:00:00,000 --> 01:00:01,250\r\nan hour in\r\n".encode()
    cues = parse_captions(srt, "srt", duration=3601, name="talk.fr.srt")
    assert [(c.start, c.end, c.text) for c in cues] == [(1.0, 2.0, "Hé là"), (3600.0, 3601.25, "an hour in")]


def _reason(data: bytes, fmt: str = "vtt", duration: float = 10, **limits) -> str:
    with pytest.raises(PixelFlowError) as caught:
        parse_captions(data, fmt, duration, name=f"talk.en.{fmt}", **limits)
    assert caught.value.code == ErrorCode.INVALID_CAPTIONS and caught.value.is_rejection
    assert caught.value.message.startswith(f"Caption file talk.en.{fmt}: ")
    return caught.value.details["reason"]


@pytest.mark.parametrize("data,fmt,reason", [
    (bytes(range(256)) * 4, "vtt", "not_text"),                                       # binary
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "srt", "not_text"),
    (b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhi\x00there\n", "vtt", "not_text"),
    (b"1\n00:00:01,000 --> 00:00:02,000\nhello\n", "vtt", "no_header"),               # SRT named .vtt
    (b"WEBVTT\n\n00:00:01,000 --> 00:00:02,000\nhi\n", "vtt", "bad_timestamp"),       # SRT commas in WebVTT
    (b"WEBVTT\n\n00:00:01.000 --> 00:00:0x.000\nhi\n", "vtt", "bad_timestamp"),
    (b"WEBVTT\n\n00:61:01.000 --> 00:62:02.000\nhi\n", "vtt", "bad_timestamp"),
    (b"WEBVTT\n\n00:00:01.00 --> 00:00:02.000\nhi\n", "vtt", "bad_timestamp"),
    (b"WEBVTT\n\n00:00:05.000 --> 00:00:02.000\nhi\n", "vtt", "bad_timestamp"),       # ends before it starts
    (b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhi\n00:00:03.000 --> 00:00:04.000\nthere\n", "vtt", "bad_timestamp"),
    (b"1\n00:00:01.000 -> 00:00:02.000\nhi\n", "srt", "not_a_cue"),
    (b"WEBVTT\n\njust some words\n", "vtt", "not_a_cue"),
    (b"WEBVTT\n\n00:01:00.000 --> 00:01:02.000\nlate\n", "vtt", "cue_after_end"),      # the video is 10 s
    (b"WEBVTT\n\nNOTE nothing else\n", "vtt", "no_cues"),
    (b"", "srt", "no_cues"),
])
def test_malformed_files_are_invalid_captions(data, fmt, reason):
    assert _reason(data, fmt) == reason


def test_size_and_cue_count_are_capped():
    many = b"WEBVTT\n\n" + b"".join(b"00:00:01.000 --> 00:00:02.000\nx\n\n" for _ in range(11))
    assert _reason(many, max_cues=10) == "too_many_cues"
    assert _reason(b"WEBVTT\n\n" + b"a" * 2000, max_bytes=1000) == "too_large"
    assert len(parse_captions(many, "vtt", 10, name="a.en.vtt", max_cues=11)) == 11


def test_sidecar_keys_and_languages():
    assert sidecar_key("uploads/u1/talk.mp4", "pt-BR", "srt") == "uploads/u1/talk.pt-BR.srt"
    assert sidecar_of("a/talk.mp4", "a/talk.EN.VTT") == ("EN", "vtt")
    assert sidecar_of("a/talk.mp4", "a/talk.xx.vtt") == ("xx", "vtt")      # shaped like a tag: rejected below
    for other in ("a/talk.final.vtt", "a/talk.v2.en.vtt", "a/talk.en.mp4", "b/talk.en.vtt", "a/talky.en.vtt"):
        assert sidecar_of("a/talk.mp4", other) is None, other
    assert is_caption_key("a/talk.en.vtt") and not is_caption_key("a/vtt")
    caption = load_captions("a/talk.EN-gb.vtt", "a/talk.mp4", b"WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n", 5,
                            max_bytes=100, max_cues=5)
    assert (caption.language, caption.name, caption.playlist) == ("en-GB", "English (GB)", "subtitles/en-GB/index.m3u8")
    with pytest.raises(PixelFlowError) as caught:
        load_captions("a/talk.xx.vtt", "a/talk.mp4", b"WEBVTT\n", 5, max_bytes=100, max_cues=5)
    assert caught.value.code == ErrorCode.INVALID_CAPTIONS and caught.value.details["reason"] == "unknown_language"


def test_master_playlist_names_the_subtitles_group_on_every_variant():
    captions = [Captions("en", "English", "t.en.vtt", "WEBVTT\n"), Captions("fr", "French", "t.fr.srt", "WEBVTT\n")]
    text = master_playlist([VariantEntry("360p/index.m3u8", 900000, 700000, 640, 360, "avc1.64001e", 30.0),
                            VariantEntry("720p/index.m3u8", 2900000, 2700000, 1280, 720, "avc1.64001f", 30.0)],
                           AudioEntry("audio/index.m3u8", 140000, 130000), subtitle_entries(captions))
    assert ('#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",LANGUAGE="en",NAME="English",DEFAULT=YES,AUTOSELECT=YES,'
            'URI="subtitles/en/index.m3u8"') in text
    assert 'LANGUAGE="fr",NAME="French",DEFAULT=NO,AUTOSELECT=YES,URI="subtitles/fr/index.m3u8"' in text
    assert all(v["SUBTITLES"] == "subs" and v["AUDIO"] == "audio" for v in parse_master_playlist(text))
    assert "SUBTITLES" not in master_playlist([VariantEntry("a/index.m3u8", 1, 1, 2, 2, "avc1", 30.0)], None)
