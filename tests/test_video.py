"""Decoding real and synthetic videos per the frame plan, the clip cache, and the synthetic generator."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from rl.data.loaders import load_dataset
from rl.data.synthetic import generate_synthetic
from rl.data.video import (
    MediaError,
    VideoDecodeError,
    VideoLoader,
    VideoSampling,
    decode_clip,
    load_image,
    probe_video,
    resize_frames,
)

FIXTURES = Path(__file__).parent / "fixtures" / "videos"
REAL = [(FIXTURES / "bikes_640x272.mp4", 250, 25.0, 272, 640), (FIXTURES / "carphone_176x144.mp4", 120, 29.97, 144, 176)]


def all_frames_pyav(path: Path) -> np.ndarray:
    """Every frame, decoded front to back by PyAV: an independent check of decord's seeking."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def torchvision_resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """qwen-vl-utils' resize: torchvision's bicubic antialiased resize of a uint8 (T, C, H, W) tensor."""
    return TF.resize(torch.from_numpy(frames).permute(0, 3, 1, 2), [height, width], interpolation=InterpolationMode.BICUBIC,
                     antialias=True).permute(0, 2, 3, 1).numpy()  # fmt: skip


def assert_resized_like_qwen_vl_utils(got: np.ndarray, want: np.ndarray, mode: str) -> None:
    """"float": bit for bit; "uint8": torch's uint8 kernel rounds between passes (rl.data.video.resize_frames)."""
    if mode == "float":
        assert np.array_equal(got, want)
        return
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 8 and diff.mean() < 0.2 and (diff > 1).mean() < 1e-3, (diff.max(), diff.mean(), (diff > 1).mean())


@pytest.mark.parametrize("resize", ["uint8", "float"])
@pytest.mark.parametrize("patch", [14, 16])
@pytest.mark.parametrize("path,frames,fps,height,width", REAL, ids=["bikes", "carphone"])
def test_real_fixture_decodes_to_the_plan(path: Path, frames: int, fps: float, height: int, width: int, patch: int,
                                          resize: str) -> None:
    sampling = VideoSampling(patch_size=patch, min_pixels=16 * (2 * patch) ** 2, max_pixels=768 * (2 * patch) ** 2,
                             total_pixels=4096 * (2 * patch) ** 2, resize=resize)  # fmt: skip
    meta = probe_video(path)
    assert (meta.total_frames, meta.height, meta.width) == (frames, height, width)
    assert meta.fps == pytest.approx(fps, abs=0.01)
    plan = sampling.plan(meta)
    clip = decode_clip(path, sampling)
    assert clip.indices == plan.indices
    assert clip.frames.shape == (len(plan.indices), plan.height, plan.width, 3) and clip.frames.dtype == np.uint8
    assert len(plan.indices) % 2 == 0 and plan.height % (2 * patch) == 0 and plan.width % (2 * patch) == 0
    assert clip.total_frames == frames and clip.duration == pytest.approx(frames / meta.fps)
    # Only the planned frames were decoded, and they are the right ones, resized as qwen-vl-utils does.
    everything = all_frames_pyav(path)
    assert len(everything) == frames
    assert_resized_like_qwen_vl_utils(clip.frames, torchvision_resize(everything[plan.indices], plan.height, plan.width), resize)


def test_clip_window_on_real_video() -> None:
    clip = decode_clip(FIXTURES / "bikes_640x272.mp4", VideoSampling(), start=2.0, end=5.0)
    assert clip.indices == [50, 65, 80, 95, 110, 125] and clip.frames.shape == (6, 280, 644, 3)
    with pytest.raises(VideoDecodeError) as err:
        decode_clip(FIXTURES / "bikes_640x272.mp4", VideoSampling(), start=12.0, end=15.0)
    assert err.value.reason == MediaError.BAD_WINDOW


def test_float_resize_matches_torchvision_on_random_frames() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 61, 97, 3), dtype=np.uint8)
    for size in ((56, 84), (112, 196), (28, 28)):
        assert np.array_equal(resize_frames(frames, *size, "float"), torchvision_resize(frames, *size))


def test_uint8_resize_is_torchs_uint8_kernel_frame_by_frame() -> None:
    """The whole-clip channels-last call equals torch's uint8 kernel on each NCHW frame alone."""
    frames = np.random.default_rng(1).integers(0, 256, size=(4, 90, 160, 3), dtype=np.uint8)
    got = resize_frames(frames, 28, 56, "uint8")
    assert got.flags.c_contiguous and got.shape == (4, 28, 56, 3) and got.dtype == np.uint8
    for i, frame in enumerate(frames):
        alone = torch.nn.functional.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None].contiguous(), size=(28, 56),
                                                mode="bicubic", antialias=True)  # fmt: skip
        assert np.array_equal(got[i], alone[0].permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="unknown frame resize"):
        resize_frames(frames, 28, 56, "nearest")


def test_bad_videos_raise_typed_errors(tmp_path: Path) -> None:
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    (tmp_path / "empty.mp4").write_bytes(b"")
    truncated = (FIXTURES / "carphone_176x144.mp4").read_bytes()[:1500]
    (tmp_path / "truncated.mp4").write_bytes(truncated)
    loader = VideoLoader(VideoSampling())
    for name, reason in (("missing.mp4", "missing_media"), ("garbage.mp4", "corrupt_media"), ("empty.mp4", "empty_media"),
                         ("truncated.mp4", "corrupt_media")):  # fmt: skip
        for call in (lambda p: decode_clip(p, VideoSampling()), probe_video, loader.load):
            with pytest.raises(VideoDecodeError) as err:
                call(tmp_path / name)
            assert err.value.reason == reason, name
    assert loader.decodes == 0


def test_corruption_past_the_header_surfaces_at_decode(tmp_path: Path) -> None:
    data = bytearray((FIXTURES / "bikes_640x272.mp4").read_bytes())
    data[150_000:250_000] = np.random.default_rng(0).bytes(100_000)
    (tmp_path / "mid.mp4").write_bytes(bytes(data))
    assert probe_video(tmp_path / "mid.mp4").total_frames == 250  # the header and first frame are intact
    with pytest.raises(VideoDecodeError) as err:
        VideoLoader(VideoSampling()).load(tmp_path / "mid.mp4")
    assert err.value.reason == MediaError.CORRUPT


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> list:
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "set", 12, seed=7)


def test_synthetic_videos_decode_to_the_plan_and_show_their_answer(synthetic) -> None:
    loader = VideoLoader(VideoSampling())
    for sample in synthetic:
        meta = probe_video(sample.media_path)
        clip = loader.load_sample(sample)
        plan = loader.sampling.plan(meta)
        assert clip.frames.shape == (len(plan.indices), 112, 112, 3) and clip.indices == plan.indices
        assert sample.duration == pytest.approx(meta.duration)
        if sample.problem_type in ("iou", "gqa"):
            start, end = sample.answer if sample.problem_type == "iou" else sample.answer["segment"]
            for index, frame in zip(clip.indices, clip.frames):
                shown = frame.max() > 100
                t = index / clip.video_fps
                assert shown == (start <= t < end - 1e-6), (sample.id, index)
        else:
            assert all(frame.max() > 100 for frame in clip.frames)


def test_cache_serves_sixteen_copies_with_one_decode(synthetic) -> None:
    loader = VideoLoader(VideoSampling(), cache_size=2)
    first = [loader.load_sample(synthetic[0]) for _ in range(16)]
    assert loader.decodes == 1 and loader.hits == 15
    assert all(c is first[0] for c in first) and not first[0].frames.flags.writeable
    loader.load(synthetic[0].media_path, 0.5, 2.0)
    loader.load_sample(synthetic[1])
    assert loader.decodes == 3
    loader.load_sample(synthetic[0])  # evicted: least recently used of three keys in a cache of two
    assert loader.decodes == 4


def test_cache_shares_one_decode_across_threads(synthetic) -> None:
    loader = VideoLoader(VideoSampling())
    clips = []
    threads = [threading.Thread(target=lambda: clips.append(loader.load_sample(synthetic[2]))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(clips) == 16 and loader.decodes == 1 and all(c is clips[0] for c in clips)


def test_cache_notices_a_rewritten_file(tmp_path: Path, synthetic) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(Path(synthetic[0].media_path).read_bytes())
    loader = VideoLoader(VideoSampling())
    loader.load(path)
    path.write_bytes(Path(synthetic[4].media_path).read_bytes())
    os.utime(path, ns=(1, 1))
    loader.load(path)
    assert loader.decodes == 2


def test_synthetic_generator_is_deterministic(tmp_path: Path, synthetic) -> None:
    a = generate_synthetic(tmp_path / "a", 8, seed=5)
    b = generate_synthetic(tmp_path / "b", 8, seed=5)
    assert [s.id for s in a] == [s.id for s in b]
    assert (tmp_path / "a" / "samples.jsonl").read_bytes() == (tmp_path / "b" / "samples.jsonl").read_bytes()
    for x, y in zip(a, b):
        assert Path(x.media_path).read_bytes() == Path(y.media_path).read_bytes()
        assert x == type(x)(**{**x.__dict__, "media_path": x.media_path.replace(str(tmp_path / "b"), str(tmp_path / "a"))})
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()}
    again = generate_synthetic(tmp_path / "a", 8, seed=5)
    assert again == a
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert sum(1 for p in (tmp_path / "a" / "videos").iterdir()) == 8
    assert generate_synthetic(tmp_path / "c", 8, seed=6) != a
    assert generate_synthetic(tmp_path / "d", 12, seed=5)[:8] == [
        type(s)(**{**s.__dict__, "media_path": s.media_path.replace(str(tmp_path / "a"), str(tmp_path / "d"))}) for s in a
    ]
    assert all(Path(s.media_path).stat().st_size < 20_000 for s in a)


def test_synthetic_jsonl_loads_back(synthetic) -> None:
    root = Path(synthetic[0].media_path).parent.parent
    data = load_dataset(root / "samples.jsonl")
    assert data.samples == synthetic and not data.report.total
    assert {s.problem_type for s in data} == {"exact_match", "math", "iou", "gqa"}


def test_image_resize(tmp_path: Path) -> None:
    Image.new("RGBA", (640, 272), (255, 0, 0, 0)).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png", patch_size=14)
    assert image.mode == "RGB" and image.size == (644, 280)
    assert image.getpixel((10, 10)) == (255, 255, 255)
    small = load_image(tmp_path / "a.png", patch_size=16, max_pixels=64 * 32 * 32)
    assert small.size[0] % 32 == 0 and small.size[1] % 32 == 0 and small.size[0] * small.size[1] <= 64 * 32 * 32
