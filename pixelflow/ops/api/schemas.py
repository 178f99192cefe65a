"""Request and response bodies of the API (shaped like Mux's: resources are returned under
``data``, lists with ``next_cursor``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

#: Longest ``passthrough`` (the app's own id), as Mux allows.
MAX_PASSTHROUGH = 255
#: Who may play an asset (pixelflow.ops.playback).
PlaybackPolicy = Literal["public", "signed"]


class CreateUpload(BaseModel):
    """``POST /v1/uploads``."""

    model_config = ConfigDict(extra="forbid")

    filename: StrictStr = Field(description="The file's name, without any folder (it becomes the object's name).",
                                examples=["talk.mp4"])
    size: StrictInt = Field(description="The file's size in bytes (at most PIXELFLOW_MAX_SOURCE_BYTES).",
                            examples=[104857600])
    passthrough: StrictStr | None = Field(None, description="The app's own id for the asset (at most 255 "
                                          "characters); returned on the asset and in every event.")
    playback_policy: PlaybackPolicy | list[PlaybackPolicy] | None = Field(
        None, description="Who may play the asset: `public` (anyone with its URL) or `signed` (only with a "
        "playback token, POST /v1/assets/{id}/playback-tokens); Mux's one-item list is accepted too. "
        "Default: PIXELFLOW_DEFAULT_PLAYBACK_POLICY (public).")


class CompletedPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_number: StrictInt = Field(description="1-based part number.")
    etag: StrictStr = Field(description="The ETag S3 answered to the part's PUT.")


class CompleteUpload(BaseModel):
    """``POST /v1/uploads/{id}/complete``: the parts and their ETags (omit ``parts`` to complete
    with every part S3 received, which must be all of them)."""

    model_config = ConfigDict(extra="forbid")

    parts: list[CompletedPart] | None = None


class Part(BaseModel):
    part_number: int
    url: str | None = Field(None, description="Presigned PUT URL of the part (only for parts not received yet).")
    size: int = Field(description="Bytes this part must have.")


class ReceivedPart(BaseModel):
    part_number: int
    size: int
    etag: str


class Multipart(BaseModel):
    part_size: int
    part_count: int
    parts: list[Part]
    complete_url: str


class UploadData(BaseModel):
    id: str
    status: Literal["waiting", "asset_created", "errored", "cancelled", "timed_out"]
    filename: str
    size: int
    passthrough: str | None = None
    playback_policy: list[str]
    created_at: str
    expires_at: str
    url: str | None = Field(None, description="Presigned PUT URL of the whole file (small files).")
    multipart: Multipart | None = Field(None, description="How to send a large file in parts.")
    parts_received: list[ReceivedPart] = Field(default_factory=list)
    asset_id: str | None = None
    error: dict[str, Any] | None = None


class UploadOut(BaseModel):
    data: UploadData


class Download(BaseModel):
    name: str = Field(description="The rung it is made from (`1080p`).")
    url: str = Field(description="The MP4 (saved by browsers as `<source name>-<rung>.mp4`).")
    width: int | None = None
    height: int | None = None
    size: int | None = Field(None, description="Bytes.")


class Playback(BaseModel):
    hls: str = Field(description="Master playlist URL.")
    poster: str | None = Field(None, description="The poster frame (none for an audio-only asset).")
    storyboard: str | None = Field(None, description="The storyboard's WebVTT file (seek-bar previews: each cue "
                                   "points at a tile of the sprite sheet with #xywh=).")
    downloads: list[Download] = Field(default_factory=list, description="Progressive MP4 downloads (PIXELFLOW_MP4).")
    subtitles: list["Subtitles"] = Field(default_factory=list, description="Captions, one per language (also the "
                                         "master playlist's SUBTITLES group).")


# --- private playback --------------------------------------------------------------------------

class UpdateAsset(BaseModel):
    """``PATCH /v1/assets/{id}``."""

    model_config = ConfigDict(extra="forbid")

    playback_policy: PlaybackPolicy = Field(description="`public` or `signed` (then only playback tokens play it).")


class CreatePlaybackToken(BaseModel):
    """``POST /v1/assets/{id}/playback-tokens``."""

    model_config = ConfigDict(extra="forbid")

    expires_in: StrictInt | None = Field(None, description="Lifetime in seconds (default "
                                         "PIXELFLOW_PLAYBACK_TOKEN_DEFAULT_SECONDS, at most "
                                         "PIXELFLOW_PLAYBACK_TOKEN_MAX_SECONDS).", examples=[3600])
    viewer_id: StrictStr | None = Field(None, description="The app's viewer, carried in the token (at most 255 "
                                        "characters).")


class PlaybackTokenData(BaseModel):
    asset_id: str
    token: str = Field(description="The JWT (HS256): sub = asset id, aud = playback, exp, iat, viewer_id.")
    expires_at: str
    expires_in: int
    viewer_id: str | None = None
    playback: Playback = Field(description="The URLs a player loads: the token is in their path, so every "
                               "playlist and segment the player resolves from them carries it.")


class PlaybackTokenOut(BaseModel):
    data: PlaybackTokenData


class AssetData(BaseModel):
    id: str
    status: Literal["preparing", "ready", "errored"]
    progress: float | None = None
    duration: float | None = None
    aspect_ratio: str | None = None
    max_resolution: str | None = None
    renditions: list[dict[str, Any]] = Field(default_factory=list)
    audio_only: bool = Field(False, description="An upload with audio and no video: its one rendition is audio.")
    playable: bool = Field(False, description="Whether players can load it: once ready, and while preparing when "
                           "PIXELFLOW_PROGRESSIVE publishes a long asset as its chunks are encoded (the playlists "
                           "grow until the asset is ready).")
    playback: Playback | None = Field(None, description="Once playable, for public assets (signed ones: playback "
                                      "tokens give the URLs).")
    playback_policy: PlaybackPolicy = "public"
    passthrough: str | None = None
    upload_id: str | None = None
    created_at: str | None = None
    errors: dict[str, Any] | None = None


class AssetOut(BaseModel):
    data: AssetData


class AssetList(BaseModel):
    data: list[AssetData]
    next_cursor: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


# --- captions (POST /v1/uploads/{id}/captions) ----------------------------------------------------

class CreateCaptions(BaseModel):
    """``POST /v1/uploads/{upload_id}/captions``."""

    model_config = ConfigDict(extra="forbid")

    language: StrictStr = Field(max_length=16, description="The captions' language: an ISO 639-1 tag, with an "
                                "optional script and region (`en`, `pt-BR`, `zh-Hant`).", examples=["en"])
    format: Literal["vtt", "srt"] = Field("vtt", description="The file's format: WebVTT or SRT.")


class CaptionsData(BaseModel):
    upload_id: str
    language: str = Field(description="The language tag, canonical (`pt-BR`).")
    name: str = Field(description="What players show (`Portuguese (BR)`).")
    format: Literal["vtt", "srt"]
    url: str = Field(description="Presigned PUT URL of the caption file: send it before the video.")
    expires_at: str
    max_bytes: int = Field(description="Largest accepted caption file (PIXELFLOW_CAPTIONS_MAX_BYTES).")


class CaptionsOut(BaseModel):
    data: CaptionsData


class Subtitles(BaseModel):
    language: str
    name: str
    default: bool = False
    url: str = Field(description="The subtitles rendition's media playlist (one WebVTT segment).")
    vtt: str = Field(description="The WebVTT file itself.")
