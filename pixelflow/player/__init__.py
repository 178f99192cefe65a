"""The PixelFlow player: a static HLS page (with a vendored hls.js) and the tiny local server
that serves it together with an asset's files from the output bucket."""

from pixelflow.player.server import make_server, serve_in_thread, server_url

__all__ = ["make_server", "serve_in_thread", "server_url"]
