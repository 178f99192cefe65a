"""Subcommands of ``pixelflow``: one module each, each with ``register(subparsers)``."""
