"""The frame plan against the qwen-vl-utils formulas (method.md section 5).

`reference_plan` is a direct transcription of qwen-vl-utils `calculate_video_frame_range`,
`smart_nframes`, `smart_resize` and the pixel cap of `fetch_video`, kept deliberately literal and
separate from rl/data/video.py. The literal cases at the end are worked out by hand, so the test
fails if both transcriptions share a mistake.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rl.config import DataConfig
from rl.data.video import FrameWindowError, VideoSampling, plan_frames


def reference_plan(total_frames, video_fps, height, width, patch, start=None, end=None, fps=2.0, min_frames=4, max_frames=256):
    f = 2 * patch
    min_pixels, max_pixels, total_pixels = 16 * f * f, 768 * f * f, 4096 * f * f
    # calculate_video_frame_range
    if start is None and end is None:
        start_frame, end_frame, count = 0, total_frames - 1, total_frames
    else:
        max_duration = total_frames / video_fps
        start_frame = math.ceil(max(0.0, min(start, max_duration)) * video_fps) if start is not None else 0
        if end is not None:
            end_frame = min(math.floor(max(0.0, min(end, max_duration)) * video_fps), total_frames - 1)
        else:
            end_frame = total_frames - 1
        if start_frame >= end_frame:
            raise ValueError("invalid time range")
        count = end_frame - start_frame + 1
    # smart_nframes (fps mode)
    lo = math.ceil(min_frames / 2) * 2
    hi = math.floor(max_frames / 2) * 2
    nframes = count / video_fps * fps
    nframes = min(min(max(nframes, lo), hi), count)
    nframes = math.floor(nframes / 2) * 2
    if not (2 <= nframes <= count):
        raise ValueError("nframes out of range")
    idx = torch.linspace(start_frame, end_frame, nframes).round().long().tolist()
    # fetch_video pixel cap, then smart_resize
    cap = max(min(max_pixels, total_pixels / nframes * 2), int(min_pixels * 1.05))
    h_bar = max(f, round(height / f) * f)
    w_bar = max(f, round(width / f) * f)
    if h_bar * w_bar > cap:
        beta = math.sqrt((height * width) / cap)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return idx, h_bar, w_bar


def plan(total_frames, video_fps, height, width, patch, start=None, end=None, **kw):
    f2 = (2 * patch) ** 2
    return plan_frames(
        total_frames, video_fps, height, width, patch_size=patch, min_pixels=16 * f2, max_pixels=768 * f2,
        total_pixels=4096 * f2, start=start, end=end, **kw,
    )


FPS = (9.5, 15.0, 23.976, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0)
DURATIONS = (1.0, 2.5, 7.0, 30.0, 127.3, 600.0, 3600.0)
SIZES = ((144, 176), (272, 640), (240, 320), (360, 640), (480, 854), (720, 1280), (1080, 1920), (1920, 1080))
WINDOWS = ((None, None), (0.0, None), (None, 0.75), (0.3, 0.9), (0.25, None), (0.5, 1.5))
"""As fractions of the duration; 1.5 runs past the end (clamped, as in the reference)."""


@pytest.mark.parametrize("patch", [14, 16])
@pytest.mark.parametrize("video_fps", FPS)
def test_plan_matches_reference_table(patch: int, video_fps: float) -> None:
    checked = 0
    for duration, (height, width), (ws, we) in itertools.product(DURATIONS, SIZES, WINDOWS):
        total = max(1, round(duration * video_fps))
        start = None if ws is None else ws * duration
        end = None if we is None else we * duration
        try:
            want = reference_plan(total, video_fps, height, width, patch, start, end)
        except ValueError:
            with pytest.raises(FrameWindowError):
                plan(total, video_fps, height, width, patch, start, end)
            continue
        got = plan(total, video_fps, height, width, patch, start, end)
        case = (video_fps, duration, height, width, start, end)
        assert (got.indices, got.height, got.width) == want, case
        n = len(got.indices)
        assert n % 2 == 0 and 2 <= n <= 256, case
        assert got.indices == sorted(got.indices) and 0 <= got.indices[0] and got.indices[-1] < total, case
        assert got.height % (2 * patch) == 0 and got.width % (2 * patch) == 0, case
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("max_frames", [4, 16, 255, 256])
@pytest.mark.parametrize("min_frames", [1, 4, 5])
def test_frame_bounds_match_reference(min_frames: int, max_frames: int) -> None:
    for total, video_fps in ((3, 30.0), (9, 9.5), (120, 29.97), (250, 25.0), (3000, 60.0), (108000, 30.0)):
        want = reference_plan(total, video_fps, 272, 640, 14, min_frames=min_frames, max_frames=max_frames)
        got = plan(total, video_fps, 272, 640, 14, min_frames=min_frames, max_frames=max_frames)
        assert (got.indices, got.height, got.width) == want


def test_hand_computed_cases() -> None:
    # bikes: 250 frames at 25 fps, 640x272, patch 14. n = 10 s * 2 = 20. cap = 4096*784/20*2 =
    # 321126.4; round(272/28)=10 -> 280, round(640/28)=23 -> 644; 280*644 = 180320 fits.
    # indices: i * 249/19 rounded (5 * 249/19 = 65.53 -> 66, 15 * 249/19 = 196.58 -> 197).
    p = plan(250, 25.0, 272, 640, 14)
    assert p.indices == [0, 13, 26, 39, 52, 66, 79, 92, 105, 118, 131, 144, 157, 170, 183, 197, 210, 223, 236, 249]
    assert (p.height, p.width) == (280, 644)
    assert p.sample_fps == pytest.approx(2.0)
    # carphone: 120 frames at 29.97 fps. n = 120/29.97*2 = 8.008 -> 8, step 119/7 = 17 exactly.
    # round(144/28)=5 -> 140, round(176/28)=6 -> 168.
    p = plan(120, 29.97, 144, 176, 14)
    assert p.indices == [0, 17, 34, 51, 68, 85, 102, 119] and (p.height, p.width) == (140, 168)
    # patch 16 on 272x640: 272/32 = 8.5 rounds half to even -> 8 -> 256; 640/32 = 20 -> 640.
    p = plan(250, 25.0, 272, 640, 16)
    assert (p.height, p.width) == (256, 640)
    # one hour of 1080p at 30 fps, patch 16: n = 256 (capped); cap = max(min(786432, 4096*1024/256*2
    # = 32768), int(16384*1.05) = 17203) = 32768; beta = sqrt(1080*1920/32768) = 7.955;
    # 1080/7.955/32 = 4.24 -> 128, 1920/7.955/32 = 7.54 -> 224.
    p = plan(108000, 30.0, 1080, 1920, 16)
    assert len(p.indices) == 256 and p.indices[0] == 0 and p.indices[-1] == 107999
    assert (p.height, p.width) == (128, 224)
    # 1 s at 9.5 fps (10 frames): 2.1 -> at least 4 frames: 0, 3, 6, 9.
    assert plan(10, 9.5, 144, 176, 14).indices == [0, 3, 6, 9]
    # a 3-frame video: min 4 but only 3 available -> floor to even: 2 frames.
    assert plan(3, 30.0, 144, 176, 14).indices == [0, 2]
    # window 2-5 s of bikes: frames ceil(50)=50 .. floor(125)=125, 76 frames -> 6.08 -> 6, step 15.
    assert plan(250, 25.0, 272, 640, 14, start=2.0, end=5.0).indices == [50, 65, 80, 95, 110, 125]
    # window 8-30 s: the end clamps to the last frame 249; 50 frames -> 4: 200, 216.3, 232.7, 249.
    assert plan(250, 25.0, 272, 640, 14, start=8.0, end=30.0).indices == [200, 216, 233, 249]
    # small frames are scaled up to min_pixels = 16*28*28 = 12544: 64x64 -> beta 1.75 -> 112x112.
    p = plan(40, 10.0, 64, 64, 14)
    assert (p.height, p.width) == (112, 112)


def test_window_outside_video_is_an_error() -> None:
    with pytest.raises(FrameWindowError):
        plan(250, 25.0, 272, 640, 14, start=20.0, end=30.0)
    with pytest.raises(FrameWindowError):
        plan(250, 25.0, 272, 640, 14, start=4.0, end=4.01)
    with pytest.raises(FrameWindowError):
        plan(1, 25.0, 272, 640, 14)


def test_sampling_from_config_uses_token_units() -> None:
    cfg = DataConfig()
    s = VideoSampling.from_config(cfg, patch_size=16)
    assert (s.min_pixels, s.max_pixels, s.total_pixels) == (16 * 1024, 768 * 1024, 4096 * 1024)
    assert (s.fps, s.min_frames, s.max_frames) == (2.0, 4, 256)
    assert VideoSampling.from_config(cfg, patch_size=14) == VideoSampling()
