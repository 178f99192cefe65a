"""One chunk of a long source as the parameters of its own flow run (``transcode-chunk``,
docs/chunks.md "Chunks as flow runs"): plain JSON values that a flow run's parameters carry
through the Prefect API and back into the core's types unchanged.

Example:
    >>> import json
    >>> from pixelflow.core.chunks import Chunk
    >>> from pixelflow.core.loudness import LoudnessTarget
    >>> config = LadderConfig(heights=(240, 360), preset="ultrafast", loudness=LoudnessTarget(-16))
    >>> config_from_params(json.loads(json.dumps(config_params(config)))) == config
    True
    >>> chunk = Chunk(1, 8_000_000, 16_000_000, 2, 2)
    >>> chunk_from_params(json.loads(json.dumps(chunk_params(chunk)))) == chunk
    True
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pixelflow.core.chunks import Chunk
from pixelflow.core.ladder import LadderConfig
from pixelflow.core.loudness import LoudnessTarget

#: The flow a chunk runs in when it has a flow run of its own (flows/chunk.py); its deployments
#: are named like the transcode's.
CHUNK_FLOW = "transcode-chunk"


def chunk_params(chunk: Chunk) -> dict[str, int]:
    """The chunk as a flow run's parameter: its exact range in microseconds and its segments."""
    return asdict(chunk)


def chunk_from_params(data: dict[str, Any]) -> Chunk:
    return Chunk(**{name: int(data[name]) for name in ("index", "start_us", "end_us", "first_segment", "segments")})


def config_params(config: LadderConfig) -> dict[str, Any]:
    """The ladder's knobs as a flow run's parameter (JSON: the bitrate caps keyed by text)."""
    data = asdict(config)
    data["heights"] = list(config.heights)
    data["maxrates_kbps"] = {str(rung): rate for rung, rate in config.maxrates_kbps.items()}
    return data


def config_from_params(data: dict[str, Any]) -> LadderConfig:
    loudness = data.get("loudness")
    return LadderConfig(**{**data, "heights": tuple(int(h) for h in data["heights"]),
                           "maxrates_kbps": {int(rung): int(rate) for rung, rate in data["maxrates_kbps"].items()},
                           "loudness": LoudnessTarget(**loudness) if loudness else None})
