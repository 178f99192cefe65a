"""PixelFlow: S3 uploads become adaptive HLS ladders, orchestrated by Prefect 3."""

__version__ = "0.1.0"
