"""FFmpeg's log lines as PixelFlow's commands ask for them (``-loglevel level+<level>``, see
:func:`pixelflow.core.ffmpeg_args.base_args`): each message starts with its context prefixes
(``[h264 @ 0x55...]``), then its level in brackets.

Example:
    >>> level_of("[h264 @ 0x5590] [error] concealing 12 DC errors"), level_of("{")
    ('error', None)
    >>> message("[Parsed_loudnorm_0 @ 0x55bf0c610a40] [info] {")
    '{'
"""

from __future__ import annotations

import re

#: The prefixes and level tag of one message.
LEVEL_TAG = re.compile(r"^(?:\[[^\[\]]* @ 0x[0-9a-f]+\] )*\[(panic|fatal|error|warning|info|verbose|debug|trace)\] ?")
#: The levels whose messages are errors.
ERROR_LEVELS = ("panic", "fatal", "error")


def level_of(line: str) -> str | None:
    """The level of the message ``line`` starts, ``None`` for a line continuing the one before."""
    tag = LEVEL_TAG.match(line)
    return tag.group(1) if tag else None


def message(line: str) -> str:
    """``line`` without its context prefixes and level tag."""
    return LEVEL_TAG.sub("", line, count=1)
