"""The API's ASGI app: :func:`create_app` builds it from one settings object.

Routes: ``/v1/uploads``, ``/v1/assets`` and ``/v1/webhooks`` (bearer token), ``/assets/<asset_id>/<name>``
(playback files), ``/upload`` (the upload page), ``/health``, ``/openapi.json`` and ``/docs``
(Swagger UI served from the ``swagger-ui-bundle`` package: no CDN).

Example:
    >>> app = create_app(PixelFlowSettings(api_tokens=["t"]), tokens=["t"])   # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, port=8000)                           # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

import pixelflow
from pixelflow.ops.api import assets, captions, errors, uploads, webhooks
from pixelflow.ops.playback import PlaybackGate
from pixelflow.ops.playback_cdn import CdnPlaybackStore
from pixelflow.records import Records
from pixelflow.settings import PixelFlowSettings

STATIC_DIR = Path(__file__).parent / "static"
HLS_JS = Path(pixelflow.__file__).parent / "player" / "static" / "vendor" / "hls.js" / "hls.min.js"

DESCRIPTION = """Direct resumable uploads to the upload bucket, assets and their playback, deletion.

Send `Authorization: Bearer <token>` (a token of `PIXELFLOW_API_TOKENS`) on every `/v1` request.
Errors are `{"error": {"code", "message"}}` with stable codes. See docs/api.md.
"""

_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PixelFlow API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/static/docs-init.js"></script>
</body></html>
"""


def create_app(settings: PixelFlowSettings, *, s3: Any = None, records: Records | None = None,
               tokens: list[str] | None = None, kvs: Any = None) -> FastAPI:
    """The API app.

    Args:
        settings: Buckets, prefixes, the records table, limits, URLs.
        s3: An S3 client (default: :func:`pixelflow.aws.s3_client`); it presigns the upload URLs.
        records: The records store (default: :meth:`Records.from_settings`).
        tokens: The accepted bearer tokens (default: :func:`pixelflow.ops.api.auth.load_tokens`).
        kvs: A ``cloudfront-keyvaluestore`` client for ``PIXELFLOW_PLAYBACK_KVS_ARN`` (default: boto3's).
    """
    from swagger_ui_bundle import swagger_ui_path

    from pixelflow.ops.api.auth import load_tokens
    from pixelflow.aws import s3_client

    app = FastAPI(title="PixelFlow API", version=pixelflow.__version__,
                  description=DESCRIPTION, docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.settings = settings
    app.state.s3 = s3 or s3_client(signature_version="s3v4")  # SigV4 presigned URLs (SigV2 is retired)
    app.state.records = records or Records.from_settings(settings)
    app.state.tokens = list(tokens) if tokens is not None else load_tokens(settings)
    # Private playback: each asset's policy, the signing key, CloudFront's key-value store.
    app.state.playback = PlaybackGate.from_settings(settings, app.state.records)
    app.state.playback_cdn = CdnPlaybackStore.from_settings(settings, app.state.playback.key, kvs)
    errors.install(app)
    app.include_router(uploads.router)
    app.include_router(captions.router)
    app.include_router(assets.router)
    app.include_router(assets.playback)
    webhooks.install(app)
    app.mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_DOCS_PAGE)

    @app.get("/upload", include_in_schema=False)
    def upload_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "upload.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/vendor/hls.min.js", include_in_schema=False)
    def hls_js() -> FileResponse:
        return FileResponse(HLS_JS, media_type="text/javascript")

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/upload")

    @app.get("/health", tags=["service"], summary="Liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
