"""Media checks at load time: which samples' videos and images can be used, without decoding them."""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal, Union

from rl.data.records import (
    SkipReport,
)
from rl.data.video import (
    ImageDecodeError,
    MediaError,
    VideoDecodeError,
    VideoMeta,
    check_file,
    frame_window,
    probe_image,
    probe_video,
)
from rl.types import Sample

logger = logging.getLogger(__name__)

MediaCheck = Literal["probe", "exists", "none"]


def check_media(samples: list[Sample], report: SkipReport, mode: MediaCheck = "probe") -> list[Sample]:
    """Samples whose media can be used; the others go to `report` by reason.

    probe: open each video with decord (frame count, fps, first frame; a few ms each, once per
    file), check the clip window holds two frames or more, fill in `duration`; read image headers.
    exists: only that each file is there and not empty. none: no check (decode errors then surface
    as VideoDecodeError when the clip is loaded).
    """
    if mode == "none":
        return samples
    probed: dict[str, Union[VideoMeta, MediaError, None]] = {}
    kept = []
    for sample in samples:
        if sample.media_kind == "none" or sample.media_path is None:
            kept.append(sample)
            continue
        path = sample.media_path
        try:
            if path not in probed:
                try:
                    if mode == "exists":
                        check_file(path, VideoDecodeError if sample.media_kind == "video" else ImageDecodeError)
                        probed[path] = None
                    elif sample.media_kind == "video":
                        probed[path] = probe_video(path)
                    else:
                        probe_image(path)
                        probed[path] = None
                except MediaError as exc:
                    probed[path] = exc
            result = probed[path]
            if isinstance(result, MediaError):
                raise result
            if isinstance(result, VideoMeta):
                try:
                    start, end = frame_window(result.total_frames, result.fps, sample.video_start, sample.video_end)
                except ValueError as exc:
                    raise VideoDecodeError(path, MediaError.BAD_WINDOW, str(exc)) from None
                if end - start + 1 < 2:
                    raise VideoDecodeError(path, MediaError.BAD_WINDOW, "the clip window holds fewer than 2 frames")
                if sample.duration is None:
                    sample = dataclasses.replace(sample, duration=result.duration)
        except MediaError as exc:
            report.skip(exc.reason, sample.id, str(exc), source=sample.source)
            continue
        kept.append(sample)
    return kept

