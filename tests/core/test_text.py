"""User-controlled text in Markdown artifacts stays text."""

import re

from pixelflow.core.text import markdown_text

HOSTILE = "videos/[click me](https://evil.example) <script>alert(1)</script> **bold** `code` # title\n- item"


def test_a_key_written_as_markdown_is_shown_literally():
    text = markdown_text(HOSTILE)
    # no Markdown or HTML construct survives unescaped
    assert not re.search(r"(?<!\\)[\[\]<>*`_|~&]", text)
    # and removing the escapes gives the key back, on one line
    assert re.sub(r"\\(.)", r"\1", text) == HOSTILE.replace("\n", " ")


def test_long_text_is_cut():
    assert markdown_text("a" * 5000, limit=10) == "a" * 10 + "…"


def test_plain_keys_stay_as_they_are():
    assert markdown_text("videos/my holiday (2024) #3.mp4") == "videos/my holiday (2024) #3.mp4"
