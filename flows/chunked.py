"""The encode of a long source in chunks (:mod:`pixelflow.core.chunks`, docs/chunks.md): what
the ``transcode`` flow runs instead of the single-pass ladder process when the source is longer
than ``PIXELFLOW_CHUNK_SECONDS``.

One ``encode-chunk-<n>`` task per chunk (at most ``PIXELFLOW_CHUNK_WORKERS`` at once), each one
decode of its range encoding every rung and putting its segments in the attempt's folder of the
asset; the audio encoded once for the whole file (``transcode-audio``); the poster from a seek;
then one ``stitch-<rung>`` task per rung writes its media playlist over every chunk, and the
asset is published as any other (``publish-asset``), its manifest recording the ``chunks``.

A chunk that fails is retried alone (its task's retries); a manual retry of the run reuses
every chunk an earlier attempt published (its persisted result, trusted only when the listing
of the asset shows all its objects) and encodes the rest. A chunk whose decode finds the source
damaged rejects it: no chunk after it is started, and what the chunks put in the bucket is
removed, so nothing of the source is left there.
"""

from __future__ import annotations

import math

from prefect import get_run_logger
from prefect.futures import as_completed, wait
from prefect.results import get_result_store

from pixelflow.core.chunks import ChunkOutput, plan_chunks
from pixelflow.core.layout import MASTER, POSTER, missing_objects
from pixelflow.core.ladder import poster_rendition
from pixelflow.core.storyboard import STORYBOARD_IMAGE
from pixelflow.errors import PixelFlowError
from flows.transcode import _published_renditions, _raise_first_failure, _retried, _Run
from tasks.chunks import (ChunkProgress, chunk_cache_key, discard_chunks, encode_chunk, stitch_chunks,
                          storyboard_from_rendition)
from tasks.encode import make_poster
from tasks.progressive import close_audio_playlist, publish_progress
from tasks.records import encode_percent, progress_recorder, report_progress


class ChunkedRun(_Run):
    """A run whose video is encoded in chunks; publishing is the single-pass run's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = self.settings  # a progressive asset's first chunk is short: it plays once that is done
        self.chunks = plan_chunks(self.info.duration, self.plan, self.config, settings.chunk_seconds,
                                  settings.progressive_first_chunk_seconds if settings.progressive else 0)
        self.attempt = int(self.folder.rsplit("-", 1)[-1])
        # Progressive: the EVENT playlists' target duration, fixed from the first one published.
        self.progressive = self.settings.progressive and bool(self.chunks)
        self.event_target = math.ceil(self.config.segment_seconds)
        self.published = 0  # chunks published as EVENT playlists so far (from chunk 0)
        self.done: dict[int, ChunkOutput] = {}
        get_run_logger().info("asset %s: %d chunks of %d segments", self.layout.asset_id, len(self.chunks),
                              self.chunks[0].segments if self.chunks else 0)

    def published_chunks(self) -> dict[int, ChunkOutput]:
        """The chunks an earlier attempt published, by index: those with a persisted result
        whose every object the listing of the asset shows with its size."""
        store = get_result_store().update_for_task(encode_chunk)
        found = {}
        for chunk in self.chunks:
            key = chunk_cache_key(None, {"chunk": chunk, "asset_id": self.layout.asset_id,
                                         "fingerprint": self.fingerprint})
            if not store.exists(key):
                continue
            try:
                output = store.read(key).result
            except Exception:  # noqa: BLE001 - an unreadable record is as good as none
                continue
            if not missing_objects(output.objects(), self.listed):
                found[chunk.index] = output
        return found

    def chunk_task(self):
        """What each chunk is submitted to (:func:`flows.chunk.chunk_task`): ``encode-chunk`` on
        this run's task runner, or ``dispatch-chunk`` to a ``transcode-chunk`` flow run of its own."""
        from flows.chunk import chunk_task

        return chunk_task(self.settings, self.source)

    def encode_and_upload(self):
        """Encode the chunks not published yet, the audio and the poster, and stitch each
        rung's chunks into its rendition.

        Returns:
            As :meth:`flows.transcode._Run.encode_and_upload`: the video renditions, the audio
            rendition (or ``None``) and the images.
        """
        if not self.chunks:
            return super().encode_and_upload()
        logger = get_run_logger()
        settings, info = self.settings, self.info
        reused = self.published_chunks()
        if reused:
            logger.info("chunks already published by an earlier attempt: %s", ", ".join(map(str, sorted(reused))))
        progress = ChunkProgress()
        for index, output in reused.items():
            progress.update(index, output.chunk.duration)
        encode = self.chunk_task()
        audio_encoded = audio_upload = None
        if info.audio is not None:
            done, _ = _published_renditions(self.layout.asset_id, ["audio"], self.fingerprint, self.listed)
            if "audio" not in done:
                audio_encoded = self.encode_audio.submit(self.local, info, self.config, self.work / "audio", self.limits,
                                                         vouch=True)
            audio_upload = self.upload("audio", audio_encoded)
        images = {POSTER: _retried(make_poster, settings).submit(self.local, info, poster_rendition(self.plan),
                                                                 self.scratch / POSTER, self.limits)}
        encoded = []
        self.done = dict(reused)
        self.percent = encode_percent(progress, info.duration)
        with report_progress(self.percent, progress_recorder(settings.records_table, self.layout.asset_id)):
            running, rejected = [], False
            self.advance(audio_upload)  # chunks an earlier attempt published play at once
            for chunk in [c for c in self.chunks if c.index not in reused]:
                while len(running) >= settings.chunk_workers and not rejected:
                    finished = next(as_completed(running))
                    finished.wait()
                    running.remove(finished)
                    rejected = self.finished(finished, audio_upload)
                if rejected:  # a chunk found the source damaged: no chunk after it is started
                    break
                encoded.append(encode.submit(chunk, self.local, info, self.plan, self.config, self.out_root,
                                             self.limits, settings.output_bucket, self.layout.prefix,
                                             self.layout.asset_id, self.fingerprint, self.folder, self.attempt,
                                             progress))
                running.append(encoded[-1])
            for finished in as_completed(running):
                finished.wait()
                if not rejected:
                    rejected = self.finished(finished, audio_upload)
            others = [f for f in (audio_encoded, audio_upload) if f is not None] + list(images.values())
            wait(encoded + others)
        try:
            _raise_first_failure(encoded + others)
        except PixelFlowError as error:
            self.withdraw(error, sorted({self.folder} | {o.folder for o in reused.values()}))
            raise
        outputs = sorted([*reused.values(), *(f.result() for f in encoded)], key=lambda o: o.chunk.index)
        self.manifest_extra = {"encoding": "chunked", "chunks": [o.manifest_entry() for o in outputs]}
        target = self.event_target if self.progressive else None
        stitched = [_retried(stitch_chunks, settings).submit(r, outputs, self.out_root, settings.output_bucket,
                                                             self.layout.prefix, self.folder, target)
                    for r in self.plan]
        if self.progressive and audio_upload is not None:  # its viewers' audio playlist, closed
            audio_upload = _retried(close_audio_playlist, settings).submit(
                audio_upload, self.out_root, settings.output_bucket, self.layout.prefix)
        if self.storyboard is not None:  # from the smallest rung's pictures, as the ladder process makes it
            smallest = min(range(len(self.plan)), key=lambda i: self.plan[i].width * self.plan[i].height)
            images[STORYBOARD_IMAGE] = _retried(storyboard_from_rendition, settings).submit(
                stitched[smallest], self.out_root, settings.output_bucket, self.layout.prefix, self.storyboard,
                self.scratch / STORYBOARD_IMAGE, self.limits)
        wait(stitched + list(images.values()))
        _raise_first_failure(stitched + list(images.values()))
        return ([s.result() for s in stitched], audio_upload.result() if audio_upload else None,
                {name: image.result() for name, image in images.items()})

    # --- progressive publication (PIXELFLOW_PROGRESSIVE) ---------------------------------------
    def finished(self, future, audio_upload) -> bool:
        """A chunk's task ended: published as far as the chunks run on from chunk 0 (progressive),
        or whether it found the source damaged."""
        if _rejected(future):
            return True
        if future.state.is_completed():
            output = future.result()
            self.done[output.chunk.index] = output
            self.advance(audio_upload)
        return False

    def advance(self, audio_upload) -> None:
        """With ``PIXELFLOW_PROGRESSIVE``: publish the chunks done from chunk 0 on as EVENT
        playlists and the master playlist, once the audio is in the bucket (the first time, the
        asset's record turns ``playable``). A failure to publish progress only delays playback:
        the asset is still published whole at the end."""
        if not self.progressive:
            return
        ready = 0
        while ready in self.done:
            ready += 1
        if ready <= self.published:
            return
        audio = None
        if audio_upload is not None:
            audio_upload.wait()
            if not audio_upload.state.is_completed():
                return
            audio = audio_upload.result()
        chunks = [self.done[i] for i in range(ready)]
        publishing = _retried(publish_progress, self.settings).submit(
            self.plan, chunks, audio, self.out_root, self.settings.output_bucket, self.layout.prefix,
            self.folder, self.event_target)
        publishing.wait()
        if not publishing.state.is_completed():
            get_run_logger().warning("could not publish chunks 0 to %d yet; the asset plays once complete", ready - 1)
            return
        first, self.published = not self.published, ready
        if first and self.on_playable is not None:
            self.on_playable(self.percent(), publishing.result())

    def withdraw(self, error: PixelFlowError, folders: list[str]) -> None:
        """What a failed encode leaves: a rejected source's chunks are removed, and a progressive
        asset's master playlist (it plays nothing any more; a retry of a failed run publishes it
        again)."""
        removed = [MASTER] if self.published else []
        if error.is_rejection or removed:
            _retried(discard_chunks, self.settings)(self.settings.output_bucket, self.layout.prefix,
                                                    folders if error.is_rejection else [], removed)


def _rejected(future) -> bool:
    """Whether a finished chunk's task found the source damaged."""
    if not future.state.is_failed():
        return False
    try:
        future.result()
    except PixelFlowError as error:
        return error.is_rejection
    except Exception:  # noqa: BLE001 - any other failure leaves the chunk to a retry of the run
        return False
    return False
