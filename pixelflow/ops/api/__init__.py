"""PixelFlow's HTTP API (``pixelflow api``): direct resumable uploads, assets, deletion, the upload
page. See docs/api.md."""

from pixelflow.ops.api.app import create_app

__all__ = ["create_app"]
