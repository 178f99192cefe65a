"""User-controlled strings (object keys, messages that quote them) placed into rich text."""

from __future__ import annotations

import re

#: What makes markup inside a line: emphasis, code, links and images (``[``), HTML, tables,
#: strikethrough. Line-start markup (headings, lists, quotes) cannot occur: lines are joined.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&|~])")


def markdown_text(value: str, limit: int = 1024) -> str:
    """``value`` as literal text inside Markdown: every character Markdown or HTML would act on
    is escaped, line breaks become spaces, and the text is cut at ``limit`` characters.

    >>> markdown_text("[click](http://x) <img src=x> **b** notes.mp4")
    '\\\\[click\\\\](http://x) \\\\<img src=x\\\\> \\\\*\\\\*b\\\\*\\\\* notes.mp4'
    >>> markdown_text("a\\nb")
    'a b'
    """
    flat = " ".join(value[:limit].splitlines())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat) + ("…" if len(value) > limit else "")
