"""``pixelflow status ASSET_ID|KEY`` and ``pixelflow ls``: what became of uploads.

Exit codes: 0 when the asset is ready or still processing, 1 when it was rejected, failed or
is broken (objects missing) or unknown, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pixelflow.ops import assets
from pixelflow.aws import s3_client
from pixelflow.commands._common import EXIT_FAILED, EXIT_OK, add_json_flag, fail
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.settings import PixelFlowSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser(
        "status", help="show an asset's state (ready, processing, rejected, failed, broken)",
        description="Show an asset's state, renditions, duration and creation time. "
                    "Exit 0 when ready or processing, 1 when rejected, failed or unknown.",
    )
    status.add_argument("ref", metavar="ASSET_ID|KEY",
                        help="an asset id, or the key of an upload in the upload bucket")
    add_json_flag(status)
    status.set_defaults(func=run_status)

    ls = subparsers.add_parser("ls", help="list assets with their state",
                               description="List every asset (published, rejected, failed or still processing), newest first.")
    add_json_flag(ls)
    ls.set_defaults(func=run_ls)


# --- formatting ------------------------------------------------------------------------------

def format_duration(seconds: float | None) -> str:
    """``"1:02:03"``, ``"2:05"`` or ``"-"``.

    >>> format_duration(125.4), format_duration(3723), format_duration(None)
    ('2:05', '1:02:03', '-')
    """
    if seconds is None:
        return "-"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_state(info: assets.AssetInfo) -> str:
    """``ready``, ``processing`` (``processing (playable)`` once a progressive asset plays), or
    ``rejected (not_media)``."""
    if info.error:
        return f"{info.status} ({info.error['code']})"
    return f"{info.status} (playable)" if info.status == assets.PROCESSING and info.playable else info.status


def _when(info: assets.AssetInfo) -> str:
    return info.created.strftime("%Y-%m-%d %H:%M:%S") if info.created else "-"


def _rendition_names(info: assets.AssetInfo) -> str:
    return ",".join(str(r.get("name") or f"{r.get('height')}p") for r in info.renditions) or "-"


def describe(info: assets.AssetInfo, settings: PixelFlowSettings) -> str:
    """Multi-line human description of one asset."""
    lines = [f"asset      {info.asset_id}", f"status     {format_state(info)}"]
    if info.error:
        lines.append(f"error      {info.error['message']}")
    if info.source and info.source.get("key"):
        lines.append(f"source     s3://{info.source.get('bucket') or settings.upload_bucket}/{info.source['key']}")
    lines.append(f"created    {_when(info)}{' UTC' if info.created else ''}")
    if info.status == assets.READY:
        lines.append(f"duration   {format_duration(info.duration)}")
        for r in info.renditions:
            kbps = round((r.get("bandwidth") or 0) / 1000)
            size = f"{r.get('width')}x{r.get('height')}"
            lines.append(f"rendition  {r.get('name', '?'):<6} {size:<10} {kbps} kbit/s")
        lines.append(f"playlist   s3://{settings.output_bucket}/{settings.layout(info.asset_id).master_key}")
        lines.append(f"play       pixelflow play {info.asset_id}")
    return "\n".join(lines)


def table(rows: list[assets.AssetInfo]) -> str:
    """The ``ls`` table."""
    header = ("ASSET", "STATUS", "RENDITIONS", "DURATION", "CREATED (UTC)", "SOURCE")
    body = [(a.asset_id, format_state(a), _rendition_names(a), format_duration(a.duration), _when(a),
             (a.source or {}).get("key") or "-") for a in rows]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *body]:
        lines.append("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + str(row[-1]))
    return "\n".join(lines)


def exit_code(info: assets.AssetInfo) -> int:
    return EXIT_OK if info.status in (assets.READY, assets.PROCESSING) else EXIT_FAILED


def not_found(args: argparse.Namespace, error: assets.AssetNotFound) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"status": "error", **error.to_dict()}, indent=2))
    else:
        print(f"error [{error.code}]: {error.message}", file=sys.stderr)
    return EXIT_FAILED


def storage_failure(args: argparse.Namespace, exc: Exception) -> int:
    return fail(args, PixelFlowError(ErrorCode.STORAGE_ERROR, f"Reading the buckets failed: {exc}"))


# --- commands --------------------------------------------------------------------------------

def run_status(args: argparse.Namespace) -> int:
    settings = PixelFlowSettings()
    s3 = s3_client()
    try:
        asset_id = assets.resolve(args.ref, settings, s3)
        info = assets.get_asset(asset_id, settings, s3)
    except PixelFlowError as error:
        return fail(args, error)
    except assets.AssetNotFound as error:
        return not_found(args, error)
    except (ClientError, BotoCoreError) as exc:
        return storage_failure(args, exc)
    data: dict[str, Any] = info.to_dict()
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(describe(info, settings))
    return exit_code(info)


def run_ls(args: argparse.Namespace) -> int:
    settings = PixelFlowSettings()
    try:
        rows = assets.list_assets(settings, s3_client())
    except (ClientError, BotoCoreError) as exc:
        return storage_failure(args, exc)
    if getattr(args, "json", False):
        print(json.dumps([a.to_dict() for a in rows], indent=2, default=str))
    elif rows:
        print(table(rows))
    else:
        print(f"No assets in s3://{settings.output_bucket}/{settings.asset_prefix} "
              f"and no uploads in s3://{settings.upload_bucket}/.")
    return EXIT_OK
