"""PixelFlow's pure core: no Prefect, no boto3, no I/O beyond what a function's name says.

Ladder planning, FFmpeg argument building, probe interpretation, validation, playlist and
manifest building, S3 event parsing. Plain functions over small frozen dataclasses, unit-tested
directly.
"""
