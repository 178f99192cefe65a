"""The pipeline's side effects, below the flow and its tasks: running FFmpeg and ffprobe
(:mod:`pixelflow.pipeline.ffmpeg`), the shared ladder process a run's tasks take their outputs
from (:mod:`pixelflow.pipeline.ladder_process`), and the SQS-to-Prefect bridge that starts runs
(:mod:`pixelflow.pipeline.bridge`)."""
