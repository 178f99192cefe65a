"""PixelFlow's Prefect flows."""
