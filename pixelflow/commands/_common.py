"""Helpers shared by subcommands: JSON/human output and the error exit path."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pixelflow.errors import PixelFlowError

#: Exit codes: 0 success, 1 the work failed (e.g. a rejected source), 2 usage error.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(human)


def fail(args: argparse.Namespace, error: PixelFlowError) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"status": "error", **error.to_dict()}, indent=2, default=str))
    else:
        print(f"error [{error.code.value}]: {error.message}", file=sys.stderr)
    return EXIT_FAILED
