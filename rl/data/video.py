"""Video frame planning and decoding, as Qwen2.5-VL / Qwen3-VL were trained (method.md section 5).

The plan is a transcription of qwen-vl-utils `vision_process.py` (QwenLM/Qwen2.5-VL and
QwenLM/Qwen3-VL: `calculate_video_frame_range`, `smart_nframes`, `smart_resize`, `fetch_video`),
so that a model sees the frames and sizes it was trained on. Decoding reads only the planned frames
(decord `get_batch`) and resizes them bicubic with antialiasing: by default with torch's uint8
kernel (`resize="uint8"`), or to exactly the values `fetch_video`'s torchvision resize gives
(`resize="float"`: float32, rounded back to uint8); see `resize_frames` for the difference.
`smart_resize` is Qwen2.5-VL's: it keeps each side at least f when shrinking, a guard Qwen3-VL's
copy drops (it matters only near the 200:1 ratio limit).

Formulas (F = FRAME_FACTOR = 2, f = 2 * patch_size, T = total_frames, r = video_fps):

    window   no start and no end: start_frame = 0, end_frame = T - 1
             otherwise, with D = T / r and each given time clamped to [0, D]:
             start_frame = ceil(start * r)            (0 when start is None)
             end_frame   = min(floor(end * r), T - 1)  (T - 1 when end is None)
             start_frame >= end_frame is an error; W = end_frame - start_frame + 1
    n        lo = ceil(min_frames / F) * F, hi = floor(max_frames / F) * F
             n = floor(min(max(W / r * fps, lo), hi, W) / F) * F;  n < F is an error
    indices  round(linspace(start_frame, end_frame, n))   (torch float32 linspace, half to even)
    pixels   cap = max(min(max_pixels, total_pixels / n * F), int(1.05 * min_pixels))
    size     h = max(f, round(H / f) * f), w = max(f, round(W / f) * f)   (Python round: half to even)
             if h * w > cap:        b = sqrt(H * W / cap), h = max(f, floor(H / b / f) * f), same for w
             elif h * w < min_pixels: b = sqrt(min_pixels / (H * W)), h = ceil(H * b / f) * f, same for w
             max(H, W) / min(H, W) > 200 is an error
    sample_fps = n / W * r   (the fps qwen-vl-utils hands to the Qwen2.5-VL processor)
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import torch

from rl.config import DataConfig
from rl.types import Clip, Sample

FRAME_FACTOR = 2
MAX_RATIO = 200
IMAGE_MIN_TOKENS = 4
IMAGE_MAX_TOKENS = 16384
"""qwen-vl-utils image defaults, in units of (2 * patch)^2 pixels."""
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

PathLike = Union[str, os.PathLike]
FrameResize = Literal["uint8", "float"]
DECODE_CHUNK_BYTES = 12 * 2**20
"""Decoded frames held at once while a clip is built: four 720p frames, about an L3 cache's share."""


class MediaError(RuntimeError):
    """A media file that cannot be used; `reason` is a short code callers count by."""

    MISSING = "missing_media"
    EMPTY = "empty_media"
    CORRUPT = "corrupt_media"
    BAD_WINDOW = "bad_window"

    def __init__(self, path: PathLike, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {reason}: {detail}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail


class VideoDecodeError(MediaError):
    """A video that cannot be opened, decoded, or sampled in the requested window."""


class ImageDecodeError(MediaError):
    """An image that cannot be opened."""


class FrameWindowError(ValueError):
    """The requested clip window holds fewer than two frames of the video."""


def round_by_factor(number: float, factor: int) -> int:
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def smart_resize(height: int, width: int, factor: int, min_pixels: float, max_pixels: float) -> tuple[int, int]:
    """Closest size with both sides multiples of `factor` and area within [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio must be at most {MAX_RATIO}, got {height}x{width}")
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, floor_by_factor(height / beta, factor))
        w_bar = max(factor, floor_by_factor(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


def frame_window(
    total_frames: int, video_fps: float, start: Optional[float] = None, end: Optional[float] = None
) -> tuple[int, int]:
    """Inclusive (start_frame, end_frame) of a clip given in seconds, clamped to the video."""
    if video_fps <= 0 or total_frames <= 0:
        raise FrameWindowError(f"video has {total_frames} frames at {video_fps} fps")
    if start is None and end is None:
        return 0, total_frames - 1
    duration = total_frames / video_fps
    start_frame = 0 if start is None else math.ceil(max(0.0, min(start, duration)) * video_fps)
    end_frame = total_frames - 1
    if end is not None:
        end_frame = min(math.floor(max(0.0, min(end, duration)) * video_fps), total_frames - 1)
    if start_frame >= end_frame:
        raise FrameWindowError(
            f"window [{start}, {end}] s gives frames {start_frame}..{end_frame} of a "
            f"{duration:.2f} s video ({total_frames} frames at {video_fps:.3f} fps)"
        )
    return start_frame, end_frame


def smart_nframes(window_frames: int, video_fps: float, fps: float, min_frames: int, max_frames: int) -> int:
    """Frames to sample from a window: `fps` over its span, clamped, even, at most what it holds."""
    lo = ceil_by_factor(min_frames, FRAME_FACTOR)
    hi = floor_by_factor(max_frames, FRAME_FACTOR)
    n = floor_by_factor(min(max(window_frames / video_fps * fps, lo), hi, window_frames), FRAME_FACTOR)
    if not FRAME_FACTOR <= n <= window_frames:
        raise FrameWindowError(f"a window of {window_frames} frames cannot give {FRAME_FACTOR} or more samples")
    return n


@dataclass(frozen=True)
class FramePlan:
    """Which frames to decode and the size to resize them to."""

    indices: list[int]
    height: int
    width: int
    sample_fps: float
    """n / window_frames * video_fps, the per-video fps qwen-vl-utils gives Qwen2.5-VL."""


def plan_indices(
    total_frames: int,
    video_fps: float,
    *,
    fps: float = 2.0,
    min_frames: int = 4,
    max_frames: int = 256,
    start: Optional[float] = None,
    end: Optional[float] = None,
) -> tuple[list[int], int]:
    """(indices, window_frames): the temporal half of the plan, which needs no frame size."""
    start_frame, end_frame = frame_window(total_frames, video_fps, start, end)
    window_frames = end_frame - start_frame + 1
    n = smart_nframes(window_frames, video_fps, fps, min_frames, max_frames)
    return torch.linspace(start_frame, end_frame, n).round().long().tolist(), window_frames


def plan_size(
    height: int, width: int, nframes: int, *, patch_size: int, min_pixels: float, max_pixels: float, total_pixels: float
) -> tuple[int, int]:
    """(height, width) of every frame: the spatial half of the plan, given the frame count."""
    cap = max(min(max_pixels, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return smart_resize(height, width, 2 * patch_size, min_pixels, cap)


def plan_frames(
    total_frames: int,
    video_fps: float,
    height: int,
    width: int,
    *,
    patch_size: int,
    fps: float = 2.0,
    min_frames: int = 4,
    max_frames: int = 256,
    min_pixels: float,
    max_pixels: float,
    total_pixels: float,
    start: Optional[float] = None,
    end: Optional[float] = None,
) -> FramePlan:
    """The frame plan of qwen-vl-utils `fetch_video` (formulas in the module docstring).

    `max_pixels` is the per-frame cap (768 f^2 in training), `total_pixels` the video budget
    (4096 f^2), `min_pixels` the per-frame floor (16 f^2). Raises FrameWindowError when the window
    holds fewer than two frames.
    """
    indices, window_frames = plan_indices(
        total_frames, video_fps, fps=fps, min_frames=min_frames, max_frames=max_frames, start=start, end=end
    )
    h, w = plan_size(
        height, width, len(indices), patch_size=patch_size, min_pixels=min_pixels, max_pixels=max_pixels,
        total_pixels=total_pixels,
    )
    return FramePlan(indices=indices, height=h, width=w, sample_fps=len(indices) / window_frames * video_fps)


@dataclass(frozen=True)
class VideoSampling:
    """The plan parameters of one model family, in pixels; hashable so it can key a cache."""

    patch_size: int = 14
    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 256
    min_pixels: int = 16 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    total_pixels: int = 4096 * 28 * 28
    resize: FrameResize = "uint8"

    @classmethod
    def from_config(cls, cfg: DataConfig, patch_size: int) -> "VideoSampling":
        """DataConfig gives pixel budgets in units of f^2, f = 2 * patch_size (14: Qwen2.5-VL, 16: Qwen3-VL)."""
        f2 = (2 * patch_size) ** 2
        return cls(
            patch_size=patch_size,
            fps=cfg.fps,
            min_frames=cfg.min_frames,
            max_frames=cfg.max_frames,
            min_pixels=cfg.min_pixels_tokens * f2,
            max_pixels=cfg.max_pixels_tokens * f2,
            total_pixels=cfg.total_pixels_tokens * f2,
            resize=cfg.frame_resize,
        )

    def plan(self, meta: "VideoMeta", start: Optional[float] = None, end: Optional[float] = None) -> FramePlan:
        """The full plan of one video (or of its window [start, end] in seconds)."""
        return plan_frames(
            meta.total_frames,
            meta.fps,
            meta.height,
            meta.width,
            patch_size=self.patch_size,
            fps=self.fps,
            min_frames=self.min_frames,
            max_frames=self.max_frames,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            total_pixels=self.total_pixels,
            start=start,
            end=end,
        )

    def indices(
        self, total_frames: int, video_fps: float, start: Optional[float], end: Optional[float]
    ) -> tuple[list[int], int]:
        """The temporal half alone: decoding needs it before the frame size is known."""
        return plan_indices(
            total_frames, video_fps, fps=self.fps, min_frames=self.min_frames, max_frames=self.max_frames,
            start=start, end=end,
        )

    def size(self, height: int, width: int, nframes: int) -> tuple[int, int]:
        """The spatial half, from the decoded frames' size."""
        return plan_size(
            height, width, nframes, patch_size=self.patch_size, min_pixels=self.min_pixels,
            max_pixels=self.max_pixels, total_pixels=self.total_pixels,
        )


@dataclass(frozen=True)
class VideoMeta:
    """What a probe learns about a video: frame count and fps from the container, size from frame 0."""

    total_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration(self) -> float:
        return self.total_frames / self.fps


def check_file(path: PathLike, error: type[MediaError] = MediaError) -> None:
    """Raise `error` (reason missing_media or empty_media) unless `path` is a non-empty file."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise error(path, MediaError.MISSING, "no such file") from None
    except OSError as exc:
        raise error(path, MediaError.MISSING, str(exc)) from None
    if size == 0:
        raise error(path, MediaError.EMPTY, "file is empty")


def _open_video(path: PathLike, num_threads: int):
    """(reader, total_frames, fps) from the container, without decoding; raises VideoDecodeError."""
    import decord

    check_file(path, VideoDecodeError)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
        total_frames, fps = len(reader), float(reader.get_avg_fps())
    except Exception as exc:  # decord raises DECORDError/RuntimeError carrying ffmpeg's message
        raise VideoDecodeError(path, MediaError.CORRUPT, _one_line(exc)) from None
    if total_frames <= 0 or not fps > 0:
        raise VideoDecodeError(path, MediaError.CORRUPT, f"{total_frames} frames at {fps} fps")
    return reader, total_frames, fps


def _one_line(exc: BaseException) -> str:
    """decord's messages span lines and repeat ffmpeg's log: one line, bounded."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def probe_video(path: PathLike) -> VideoMeta:
    """Frame count and fps from the container, size from decoding frame 0; raises VideoDecodeError.

    Cheap enough for load time (a few ms); it catches missing, empty and unreadable files.
    """
    reader, total_frames, fps = _open_video(path, num_threads=1)
    try:
        height, width = reader[0].shape[:2]
    except Exception as exc:
        raise VideoDecodeError(path, MediaError.CORRUPT, f"first frame: {_one_line(exc)}") from None
    return VideoMeta(total_frames, fps, int(height), int(width))


def resize_frames(frames: np.ndarray, height: int, width: int, mode: FrameResize = "uint8") -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, height, width, 3) uint8, bicubic with antialiasing.

    "float" gives the values of the torchvision resize qwen-vl-utils calls, bit for bit (float32,
    rounded back to uint8), one frame at a time in contiguous NCHW float: 12 ms a 720p frame on
    one core, 3 s of a 2-minute clip's 240 frames. "uint8" runs torch's uint8 kernel on the whole
    clip (channels-last, no float copy): about 15x faster. It rounds between its horizontal and
    vertical passes, so about one value in ten is off by 1 and a few at hard edges by up to 8 (mean
    |difference| 0.09-0.13 levels on the fixtures and the benchmark's clip; docs/data.md). Engines
    and learner ranks get the same frames either way.
    """
    if frames.shape[1:3] == (height, width):
        return np.ascontiguousarray(frames)
    if mode == "uint8":
        batch = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # a channels-last view
        out = torch.nn.functional.interpolate(batch, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        return np.ascontiguousarray(out.permute(0, 2, 3, 1).numpy())
    if mode != "float":
        raise ValueError(f"unknown frame resize {mode!r}; expected 'uint8' or 'float'")
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
    target = torch.from_numpy(out)
    for i in range(frames.shape[0]):
        frame = torch.from_numpy(frames[i]).permute(2, 0, 1).unsqueeze(0).contiguous().float()
        frame = torch.nn.functional.interpolate(frame, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        target[i] = frame.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
    return out


def decode_clip(
    path: PathLike,
    sampling: VideoSampling,
    start: Optional[float] = None,
    end: Optional[float] = None,
    *,
    num_threads: int = 1,
) -> Clip:
    """Decode only the planned frames of `path[start:end]` and resize them; raises VideoDecodeError.

    The frame size comes from the first decoded frame, so no frame is decoded outside the plan.
    With the uint8 resize, frames are decoded and resized a few at a time (`DECODE_CHUNK_BYTES` of
    decoded frames), not as one batch: a 2-minute 720p clip's 240 planned frames are 660 MB
    decoded, and going through them in cache-sized chunks builds the clip in about two thirds of
    the time (docs/data.md), with the same frames (decord decodes forward through the GOP either way).
    """
    reader, total_frames, fps = _open_video(path, num_threads)
    try:
        indices, window_frames = sampling.indices(total_frames, fps, start, end)
    except FrameWindowError as exc:
        raise VideoDecodeError(path, MediaError.BAD_WINDOW, str(exc)) from None
    first = _decode_frames(reader, path, indices[:1])
    try:
        height, width = sampling.size(first.shape[1], first.shape[2], len(indices))
    except ValueError as exc:
        raise VideoDecodeError(path, MediaError.CORRUPT, str(exc)) from None
    frames = np.empty((len(indices), height, width, 3), dtype=np.uint8)
    frames[:1] = resize_frames(first, height, width, sampling.resize)
    # "float" keeps one batch: its frame-by-frame multithreaded resize interleaved with decoding is
    # slower on two threads (11 s vs 8 s for the clip above), and it stays the reference path.
    chunk = len(indices) if sampling.resize == "float" else max(1, DECODE_CHUNK_BYTES // first[0].nbytes)
    for at in range(1, len(indices), chunk):
        part = _decode_frames(reader, path, indices[at:at + chunk])
        if part.shape[1:] != first.shape[1:]:
            raise VideoDecodeError(path, MediaError.CORRUPT, f"frame size changed from {first.shape[1:3]} to {part.shape[1:3]}")
        frames[at:at + len(part)] = resize_frames(part, height, width, sampling.resize)
    frames.flags.writeable = False
    return Clip(frames=frames, indices=indices, video_fps=fps, total_frames=total_frames, duration=total_frames / fps,
                sample_fps=len(indices) / window_frames * fps)


def _decode_frames(reader, path: PathLike, indices: list[int]) -> np.ndarray:
    """decord's frames at `indices` as a (n, H, W, 3) uint8 array; raises VideoDecodeError."""
    try:
        frames = reader.get_batch(indices).asnumpy()
    except Exception as exc:
        raise VideoDecodeError(path, MediaError.CORRUPT, f"decoding frames failed: {_one_line(exc)}") from None
    if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[3] != 3:
        raise VideoDecodeError(path, MediaError.CORRUPT, f"got frames of shape {frames.shape} for {len(indices)} indices")
    return frames


class VideoLoader:
    """Decodes clips through a bounded LRU cache, so the G copies of a prompt share one decode.

    Keyed by (path, size and mtime of the file, window, sampling). Cached frames are read-only,
    since every holder of a clip sees the same array. Thread-safe: concurrent requests for one
    key wait for a single decode.
    """

    def __init__(self, sampling: VideoSampling, cache_size: int = 64, *, num_threads: int = 1) -> None:
        self.sampling = sampling
        self.cache_size = cache_size
        self.num_threads = num_threads
        self.hits = 0
        self.decodes = 0
        self._cache: OrderedDict[tuple, Clip] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[tuple, threading.Lock] = {}

    @classmethod
    def from_config(cls, cfg: DataConfig, patch_size: int) -> "VideoLoader":
        """The loader a run uses: the config's sampling for this patch size, `video_cache_size` clips."""
        return cls(VideoSampling.from_config(cfg, patch_size), cfg.video_cache_size)

    def load(self, path: PathLike, start: Optional[float] = None, end: Optional[float] = None) -> Clip:
        """The clip of `path[start:end]` (seconds); raises VideoDecodeError."""
        try:
            stat = os.stat(path)
        except OSError:
            check_file(path, VideoDecodeError)
            raise
        key = (os.fspath(path), stat.st_size, stat.st_mtime_ns, start, end, self.sampling)
        clip = self._lookup(key)
        if clip is not None:
            return clip
        with self._lock:
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            clip = self._lookup(key)
            if clip is not None:
                return clip
            try:
                clip = decode_clip(path, self.sampling, start, end, num_threads=self.num_threads)
                with self._lock:
                    self.decodes += 1
                    if self.cache_size > 0:
                        self._cache[key] = clip
                        while len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
        return clip

    def load_sample(self, sample: Sample) -> Clip:
        """The clip a video sample asks for."""
        if sample.media_kind != "video" or sample.media_path is None:
            raise ValueError(f"sample {sample.id} has no video")
        return self.load(sample.media_path, sample.video_start, sample.video_end)

    def _lookup(self, key: tuple) -> Optional[Clip]:
        with self._lock:
            clip = self._cache.get(key)
            if clip is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            return clip

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


def probe_image(path: PathLike) -> tuple[int, int]:
    """(height, width) from the image header; raises ImageDecodeError."""
    from PIL import Image

    check_file(path, ImageDecodeError)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as exc:
        raise ImageDecodeError(path, MediaError.CORRUPT, _one_line(exc)) from None
    return height, width


def load_image(
    path: PathLike,
    *,
    patch_size: int = 14,
    min_pixels: Optional[int] = None,
    max_pixels: Optional[int] = None,
):
    """An RGB PIL image resized as qwen-vl-utils `fetch_image` (bicubic; sides multiples of 2 * patch).

    Defaults are qwen-vl-utils': 4 f^2 to 16384 f^2 pixels. RGBA is composed over white.
    """
    from PIL import Image

    check_file(path, ImageDecodeError)
    factor = 2 * patch_size
    try:
        with Image.open(path) as raw:
            if raw.mode == "RGBA":
                image = Image.new("RGB", raw.size, (255, 255, 255))
                image.paste(raw, mask=raw.split()[3])
            else:
                image = raw.convert("RGB")
    except Exception as exc:
        raise ImageDecodeError(path, MediaError.CORRUPT, _one_line(exc)) from None
    width, height = image.size
    h, w = smart_resize(
        height,
        width,
        factor,
        IMAGE_MIN_TOKENS * factor**2 if min_pixels is None else min_pixels,
        IMAGE_MAX_TOKENS * factor**2 if max_pixels is None else max_pixels,
    )
    return image.resize((w, h), Image.Resampling.BICUBIC)


def video_path(root: Path, name: str) -> Path:
    """A video named by id (Charades, ActivityNet, NExT-QA ids carry no extension): the first that exists."""
    path = root / name
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return path
    for ext in VIDEO_EXTENSIONS:
        if path.with_name(path.name + ext).is_file():
            return path.with_name(path.name + ext)
    return path.with_name(path.name + ".mp4")
