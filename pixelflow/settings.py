"""PixelFlow's one settings object.

Everything is read from environment variables prefixed ``PIXELFLOW_`` (plus the standard
``AWS_*`` variables, which boto3 reads itself: ``AWS_ENDPOINT_URL`` points every client at a
local S3/SQS endpoint such as moto's server). Settings are read once at the edges (CLI, flow
entry, bridge) and passed in; the pure core never reads the environment.

Example:
    >>> import os
    >>> os.environ["PIXELFLOW_LADDER"] = "360,720"
    >>> PixelFlowSettings().ladder
    [360, 720]
    >>> del os.environ["PIXELFLOW_LADDER"]
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from pixelflow.core.ladder import LadderConfig
from pixelflow.core.layout import AssetLayout
from pixelflow.core.loudness import TARGET_I_RANGE, TARGET_LRA_RANGE, TARGET_TP_RANGE, LoudnessTarget
from pixelflow.core.validation import Limits

DEFAULT_CONTAINERS = ["mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "mxf", "ogg"]
DEFAULT_AUDIO_CONTAINERS = ["mp3", "wav", "flac", "aac"]
DEFAULT_AUDIO_CODECS = ["aac", "mp3", "flac", "opus", "vorbis", "alac", "pcm_s16le", "pcm_s24le"]
DEFAULT_VIDEO_CODECS = ["h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mpeg1video", "prores", "dnxhd", "mjpeg", "theora", "h263", "wmv3", "vc1"]
#: The ladder defaults are :class:`LadderConfig`'s, written once there.
_LADDER = LadderConfig()


def _csv(value):
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class PixelFlowSettings(BaseSettings):
    """Typed settings for every PixelFlow process (flow runs, CLI, bridge, local stack)."""

    model_config = SettingsConfigDict(env_prefix="PIXELFLOW_", extra="ignore")

    # --- storage ---------------------------------------------------------------------------
    upload_bucket: str = Field("pixelflow-uploads", description="Bucket users upload sources to.")
    output_bucket: str = Field("pixelflow-assets", description="Production bucket assets are published to.")
    asset_prefix: str = Field("assets/", description="Key prefix of published assets in the output bucket.")
    quarantine_prefix: str = Field(
        "quarantine/", description="Key prefix (in the upload bucket) where a copy of each rejected source is kept."
    )
    record_prefix: str = Field(
        "records/", description="Key prefix (in the output bucket, never served) of each asset's rejection or failure "
        "record (error.json) and retry count: where uploaders cannot write.")
    scratch_dir: Path = Field(
        Path(tempfile.gettempdir()) / "pixelflow", description="Local scratch space for sources and renditions."
    )
    scratch_headroom: float = Field(
        2.5, description="Free scratch space required before download, as a multiple of the source size."
    )
    scratch_bytes: int | None = Field(
        None, description="Size of the scratch space a worker has, in bytes (default: the size of the file system "
                          "holding scratch_dir). A source larger than this divided by scratch_headroom can never fit: "
                          "it is rejected as too_large before download.")
    multipart_chunk_mb: int = Field(16, description="Part size of multipart S3 transfers, in MiB; smaller objects "
                                                    "move in one request.")
    transfer_concurrency: int = Field(8, description="Concurrent parts per S3 transfer.")

    # --- queue and events ------------------------------------------------------------------
    queue_name: str = Field("pixelflow-uploads", description="SQS queue receiving the upload bucket's notifications.")
    dlq_name: str = Field("pixelflow-uploads-dlq", description="Dead-letter queue of the upload queue.")
    max_receive_count: int = Field(5, description="Receives before a message moves to the dead-letter queue.")
    bridge_wait_seconds: int = Field(20, description="SQS long-poll wait of the bridge.")
    bridge_visibility_timeout: int = Field(120, description="Seconds a received message stays hidden from others.")

    # --- ladder ----------------------------------------------------------------------------
    ladder: Annotated[list[int], NoDecode] = Field(
        list(_LADDER.heights), description="Rung heights (short side). Rungs taller than the source are skipped."
    )
    preset: str = Field(_LADDER.preset, description="libx264 preset.")
    crf: int = Field(_LADDER.crf, description="libx264 CRF, capped per rung by maxrate/bufsize.")
    gop_seconds: float = Field(_LADDER.gop_seconds, description="Keyframe interval in seconds, identical on every rung.")
    segment_seconds: float = Field(_LADDER.segment_seconds, description="HLS segment length in seconds (a multiple of gop_seconds).")
    audio_bitrate_kbps: int = Field(_LADDER.audio_bitrate_kbps, description="AAC bitrate of the audio rendition.")
    # EBU R128 loudness normalisation of the audio rendition (pixelflow/core/loudness.py).
    loudness_target: float | None = Field(
        None, ge=TARGET_I_RANGE[0], le=TARGET_I_RANGE[1], description="Integrated loudness the audio rendition is "
        "normalised to, in LUFS (EBU R128, FFmpeg's two-pass loudnorm; e.g. -16 for streaming, -23 for broadcast). "
        "Unset: the audio is not normalised.")
    loudness_true_peak: float = Field(
        -1.5, ge=TARGET_TP_RANGE[0], le=TARGET_TP_RANGE[1], description="Highest true peak of the normalised audio, "
        "in dBTP (with loudness_target).")
    loudness_range: float = Field(
        11.0, ge=TARGET_LRA_RANGE[0], le=TARGET_LRA_RANGE[1], description="Loudness range (LRA) the normalisation "
        "keeps with one gain, in LU; a wider source is compressed to it (with loudness_target).")
    max_fps: float = Field(_LADDER.max_fps, description="Frame-rate cap of rungs above 480p.")
    low_rung_max_fps: float = Field(_LADDER.low_rung_max_fps, description="Frame-rate cap of rungs at 480p and below.")
    encoder_threads: int = Field(_LADDER.threads, description="libx264 threads per rendition (0: automatic).")
    # Storyboard (seek-bar previews), made from the ladder process's smallest rung.
    storyboard_interval: int = Field(5, ge=0, description="Seconds between storyboard tiles (raised for long sources "
                                     "so the sheet holds at most storyboard_max_tiles); 0: no storyboard.")
    storyboard_tile_width: int = Field(160, ge=16, le=640, description="Width of a storyboard tile, in pixels.")
    storyboard_max_tiles: int = Field(200, ge=1, le=1000, description="Most tiles on an asset's storyboard sheet.")
    # MP4 downloads, remuxed from the renditions.
    mp4: Literal["none", "highest", "all"] = Field(
        "highest", description="Which rungs get a progressive MP4 download (remuxed from their segments, not "
        "re-encoded): none, the highest at or below mp4_max_rung, or all of those.")
    mp4_max_rung: int = Field(1080, ge=1, description="Tallest rung (its short side, e.g. 1080) with an MP4 download.")
    # Captions: WebVTT or SRT sidecars of an upload (talk.mp4 + talk.en.vtt), published as subtitles.
    captions_max_bytes: int = Field(2 * 1024**2, ge=1, description="Largest accepted caption file, in bytes.")
    captions_max_cues: int = Field(20_000, ge=1, description="Most cues in one caption file.")
    captions_max_languages: int = Field(20, ge=0, description="Most caption files (languages) of one upload; "
                                        "0: sidecars are ignored.")
    # Thumbnails at time t (GET /assets/<asset_id>/thumbnail.jpg), made from the renditions on request.
    thumbnail_max_width: int = Field(1920, ge=16, le=8192, description="Widest (and tallest) thumbnail served, in "
                                     "pixels (never above the asset's largest rendition).")
    thumbnail_cache_bytes: int = Field(64 * 1024**2, ge=0, description="Bytes of recent thumbnails kept in memory "
                                       "by each API or player server process (0: none).")
    thumbnail_concurrency: int = Field(2, ge=1, description="FFmpeg thumbnail processes at once per process; "
                                       "requests beyond them are 503 thumbnails_busy with Retry-After.")
    thumbnail_timeout_seconds: float = Field(20.0, gt=0, description="Wall-clock limit of one thumbnail's FFmpeg "
                                             "process, in seconds.")
    thumbnail_memory_bytes: int = Field(2 * 1024**3, ge=0, description="Address space limit (RLIMIT_AS) of a "
                                        "thumbnail's FFmpeg process, in bytes; 0 for none.")
    # Chunked encoding of long sources (pixelflow/core/chunks.py, docs/chunks.md).
    chunk_seconds: float = Field(
        300.0, ge=0, description="Sources longer than this many seconds have their video encoded in chunks of this "
        "length (rounded down to whole segments, at least one), each chunk its own task, the audio once for the whole "
        "file; 0: every source in one pass.")
    chunk_workers: int = Field(2, ge=1, description="Chunks of one run encoded at once (each one FFmpeg process "
                               "decoding its range and encoding every rung).")
    chunk_dispatch: Literal["auto", "tasks", "runs"] = Field(
        "auto", description="Where the chunks of a long source are encoded: `tasks`, on the run's own task runner "
        "(threads of its process or container); `runs`, each chunk its own flow run of the `transcode-chunk` "
        "deployment named like the run's own deployment, on the same work pool (its own container on ECS, its own "
        "process locally); `auto`, `runs` when the run was started from a deployment and that `transcode-chunk` "
        "deployment exists, else `tasks`.")
    progressive: bool = Field(
        False, description="Make a chunked asset playable before it is done: its master playlist and EVENT media "
        "playlists are published once the first chunk (and the audio) is, grow as later chunks finish, and are "
        "closed with #EXT-X-ENDLIST at the end (docs/chunks.md). Viewers may watch a source that is later found "
        "damaged and withdrawn; off: an asset is visible only once whole.")
    progressive_first_chunk_seconds: float = Field(
        30.0, ge=0, description="With progressive on, the first chunk's length (whole segments; at most "
        "chunk_seconds): the asset plays once it is encoded, so a short first chunk makes it playable sooner; 0: "
        "chunk_seconds.")
    max_attempts: int = Field(4, description="Attempts of one transcode run (crash re-runs and retries) before it gives up.")
    task_retries: int = Field(2, description="Automatic retries of a failed transcode or transfer task (transient errors only).")

    # --- limits ----------------------------------------------------------------------------
    max_source_bytes: int = Field(50 * 1024**3, description="Largest accepted upload, in bytes.")
    max_duration_seconds: float = Field(6 * 3600, description="Longest accepted source, in seconds.")
    max_width: int = Field(8192, description="Widest accepted source, in pixels.")
    max_height: int = Field(8192, description="Tallest accepted source, in pixels.")
    max_pixels: int = Field(7680 * 4320, description="Largest accepted frame area, in pixels.")
    min_dimension: int = Field(16, description="Smallest accepted width or height, in pixels.")
    min_fps: float = Field(1.0, description="Lowest accepted frame rate.")
    max_source_fps: float = Field(240.0, description="Highest accepted frame rate.")
    allowed_containers: Annotated[list[str], NoDecode] = Field(
        DEFAULT_CONTAINERS, description="ffprobe demuxer names accepted as sources."
    )
    allowed_video_codecs: Annotated[list[str], NoDecode] = Field(
        DEFAULT_VIDEO_CODECS, description="Video codecs accepted in sources."
    )
    allowed_audio_containers: Annotated[list[str], NoDecode] = Field(
        DEFAULT_AUDIO_CONTAINERS, description="ffprobe demuxer names accepted for audio-only uploads (besides "
        "allowed_containers, which may hold audio alone too, like .m4a).")
    allowed_audio_codecs: Annotated[list[str], NoDecode] = Field(
        DEFAULT_AUDIO_CODECS, description="Audio codecs accepted in audio-only uploads.")
    max_streams: int = Field(32, description="Most streams (video, audio, subtitles, data) an accepted source has.")
    max_work_pixels: int = Field(
        3840 * 2160 * 60 * 6 * 3600,
        description="Work budget of one source: coded width x height x frame rate x duration, in pixels "
                    "(default: six hours of 4K at 60 fps). Checked from the headers before any decode.")
    ffmpeg_timeout_factor: float = Field(
        20.0, description="FFmpeg wall-clock limit as a multiple of the source duration (plus ffmpeg_timeout_base)."
    )
    ffmpeg_timeout_base: float = Field(120.0, description="Seconds every FFmpeg process gets on top of "
                                                          "duration x ffmpeg_timeout_factor.")
    max_run_seconds: float = Field(
        86400.0, description="Wall-clock cap of one run's FFmpeg work, in seconds: every FFmpeg process is limited "
                             "to what remains of it.")
    ffmpeg_memory_bytes: int | None = Field(
        12 * 1024**3, description="Address space limit (RLIMIT_AS) of every FFmpeg and ffprobe process, in bytes; "
                                  "0 for none.")
    ffmpeg_sandbox: Literal["auto", "required", "off"] = Field(
        "auto", description="Network isolation of FFmpeg and ffprobe: auto (a network namespace when the machine "
                            "allows it), required, or off.")

    # --- retries of failed uploads (pixelflow reconcile, pixelflow/ops/retries.py) -------------
    failed_retry_limit: int = Field(
        3, ge=0, description="Runs the reconciler starts again for an upload whose run failed for a service reason "
        "(never a rejection); 0: none.")
    failed_retry_backoff_seconds: float = Field(
        300.0, gt=0, description="Wait after a failure before the reconciler's first retry; doubled for each retry "
        "made.")
    failed_retry_backoff_max_seconds: float = Field(
        6 * 3600.0, gt=0, description="Longest wait before one retry of a failed upload.")

    # --- HTTP API and records (pixelflow api) --------------------------------------------------
    api_tokens: Annotated[list[str], NoDecode] = Field(
        [], repr=False, description="Bearer tokens the HTTP API accepts (comma-separated). Empty: every request is 401.")
    api_tokens_secret_id: str | None = Field(
        None, description="Secrets Manager secret (name or ARN) holding the API tokens, comma-separated or a JSON "
        "list; read at start-up and added to PIXELFLOW_API_TOKENS (the AWS deployment sets it).")
    api_public_url: str | None = Field(
        None, description="Base URL clients reach the API at (e.g. https://video.example.com/); playback URLs are built "
        "on it. Unset: the URL of each request.")
    playback_base_url: str | None = Field(
        None, description="Base URL of published assets, e.g. a CDN's https://cdn.example.com/assets/; players load "
        "<base><asset_id>/master.m3u8. Unset: the API serves them itself under <api>/assets/.")
    records_table: str = Field(
        "pixelflow-records", description="DynamoDB table of upload and asset records (see docs/api.md).")
    upload_key_prefix: str = Field(
        "uploads/", description="Key prefix (in the upload bucket) of uploads made through the API: "
        "<prefix><upload_id>/<filename>.")
    presign_expiry_seconds: int = Field(
        3600, ge=60, le=7 * 24 * 3600, description="Lifetime of presigned upload URLs, and of an API upload: after it "
        "an unfinished upload is timed_out.")
    upload_part_bytes: int = Field(
        16 * 1024**2, ge=5 * 1024**2, description="Part size of multipart direct uploads (at least S3's 5 MiB; grown "
        "when a file would need more than 10,000 parts).")
    multipart_threshold_bytes: int = Field(
        64 * 1024**2, ge=5 * 1024**2, description="Direct uploads larger than this use S3 multipart (resumable, one "
        "URL per part); smaller ones get one presigned PUT URL.")
    delete_source_on_asset_delete: bool = Field(
        False, description="Whether DELETE /v1/assets/{id} also removes the uploaded source (and its quarantine copy). "
        "Default: the source stays in the upload bucket, whose lifecycle rule expires it.")
    api_max_list_limit: int = Field(100, ge=1, le=1000, description="Largest `limit` of GET /v1/assets.")

    # --- local stack: the Prefect server's database (pixelflow stack up --database) ----------
    stack_database: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="Database of the local stack's Prefect server: `sqlite` (embedded, nothing to "
                              "install) or `postgres` (a local PostgreSQL server from Debian's `postgresql` "
                              "package, its data under the stack's home; use it under load).")
    # --- private playback: signed assets and their playback tokens (docs/api.md) -----------------
    default_playback_policy: Literal["public", "signed"] = Field(
        "public", description="Playback policy of assets that were given none: uploads made straight to the bucket, "
        "API uploads that did not choose, assets recorded before policies existed.")
    playback_signing_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of playback tokens (at least 32 characters). Never logged.")
    playback_signing_key_secret_id: str | None = Field(
        None, description="Secrets Manager secret (name or ARN) holding the playback signing key; read at start-up "
        "when PIXELFLOW_PLAYBACK_SIGNING_KEY is unset (the AWS deployment sets it).")
    playback_token_default_seconds: int = Field(
        3600, ge=1, description="Lifetime of a playback token when the request names none, in seconds.")
    playback_token_max_seconds: int = Field(
        24 * 3600, ge=1, description="Longest lifetime a playback token may be given, in seconds.")
    playback_kvs_arn: str | None = Field(
        None, description="CloudFront KeyValueStore the API keeps each signed asset and the signing key in, for the "
        "distribution's playback function (the AWS deployment sets it). Unset: none.")
    # --- webhooks (pixelflow/outbox.py, pixelflow/ops/webhooks/, docs/webhooks.md) -------------
    webhook_url: str | None = Field(
        None, description="An endpoint every event is sent to, besides those of POST /v1/webhooks (registered as "
        "endpoint `default` when the API or the dispatcher starts).")
    webhook_secret: str | None = Field(
        None, repr=False, description="The signing secret of PIXELFLOW_WEBHOOK_URL (required with it).")
    webhook_queue_name: str = Field(
        "pixelflow-webhooks.fifo", description="SQS FIFO queue of pending deliveries (one message group per endpoint).")
    webhook_dlq_name: str = Field("pixelflow-webhooks-dlq.fifo", description="Dead-letter queue of the webhook queue.")
    webhook_retry_base_seconds: float = Field(
        30.0, gt=0, description="Wait before the second attempt of a delivery; doubled after each failed attempt.")
    webhook_retry_max_seconds: int = Field(
        43200, ge=1, le=43200, description="Longest wait between two attempts (SQS allows 12 hours at most).")
    webhook_max_age_seconds: int = Field(
        86400, ge=1, description="How long a delivery is retried after its event, in seconds; then it is failed.")
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Time limit of one delivery attempt (connect and answer).")
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(
        [], description="Networks (CIDR, comma-separated) webhook URLs may resolve to besides public addresses; "
        "loopback, link-local and private addresses are refused otherwise. The local stack sets 127.0.0.0/8,::1/128.")
    webhook_wait_seconds: int = Field(20, ge=0, le=20, description="SQS long-poll wait of the dispatcher.")

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value):
        return _csv(value)

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value):
        return _csv(value)

    @field_validator("ladder", mode="before")
    @classmethod
    def _parse_ladder(cls, value):
        value = _csv(value)
        return sorted({int(str(v).rstrip("p")) for v in value})

    @field_validator("allowed_containers", "allowed_video_codecs", "allowed_audio_containers", "allowed_audio_codecs",
                     mode="before")
    @classmethod
    def _parse_lists(cls, value):
        return _csv(value)

    @classmethod
    def from_env(cls, overrides: Mapping[str, str]) -> "PixelFlowSettings":
        """Settings from the environment, with ``PIXELFLOW_*`` variables in ``overrides`` taking
        precedence, without touching ``os.environ`` (safe while other threads read it).

        Example:
            >>> PixelFlowSettings.from_env({"PIXELFLOW_LADDER": "360p,720", "OTHER": "x"}).ladder
            [360, 720]
        """
        prefix = cls.model_config["env_prefix"]
        values = {}
        for name, value in overrides.items():
            field = name[len(prefix):].lower() if name.startswith(prefix) else None
            if field in cls.model_fields:
                values[field] = value
        return cls(**values)

    def layout(self, asset_id: str) -> AssetLayout:
        """Where the asset ``asset_id`` and its records live under these settings' prefixes.

        Example:
            >>> PixelFlowSettings().layout("0123456789abcdef01234567").prefix
            'assets/0123456789abcdef01234567/'
        """
        return AssetLayout.of(asset_id, self.asset_prefix, self.quarantine_prefix, self.record_prefix)

    def ladder_config(self) -> LadderConfig:
        """The pure-core ladder configuration these settings describe."""
        return LadderConfig(
            heights=tuple(self.ladder),
            preset=self.preset,
            crf=self.crf,
            gop_seconds=self.gop_seconds,
            segment_seconds=self.segment_seconds,
            audio_bitrate_kbps=self.audio_bitrate_kbps,
            max_fps=self.max_fps,
            low_rung_max_fps=self.low_rung_max_fps,
            threads=self.encoder_threads,
            decode_max_pixels=self.max_pixels,
            loudness=(LoudnessTarget(self.loudness_target, self.loudness_true_peak, self.loudness_range)
                      if self.loudness_target is not None else None),
        )

    def limits(self) -> Limits:
        """The pure-core validation limits these settings describe."""
        return Limits(
            max_bytes=self.max_source_bytes,
            max_duration=self.max_duration_seconds,
            max_width=self.max_width,
            max_height=self.max_height,
            max_pixels=self.max_pixels,
            min_dimension=self.min_dimension,
            min_fps=self.min_fps,
            max_fps=self.max_source_fps,
            containers=frozenset(self.allowed_containers),
            video_codecs=frozenset(self.allowed_video_codecs),
            audio_containers=frozenset(self.allowed_audio_containers),
            audio_codecs=frozenset(self.allowed_audio_codecs),
            max_streams=self.max_streams,
            max_work_pixels=self.max_work_pixels,
            scratch_bytes=self.scratch_capacity(),
            headroom=self.scratch_headroom,
        )

    def scratch_capacity(self) -> int:
        """The scratch space a worker has: ``PIXELFLOW_SCRATCH_BYTES``, else the size of the file
        system holding ``scratch_dir`` (read now)."""
        if self.scratch_bytes is not None:
            return self.scratch_bytes
        where = Path(self.scratch_dir)
        while not where.exists() and where != where.parent:
            where = where.parent
        return shutil.disk_usage(where).total
