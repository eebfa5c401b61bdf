"""Prompt building off the driver (launch.builders): same prompts, same order and stream position as the
serial loop, with skips, prefetched rounds, refills that rewind later rounds, and a killed builder;
the frames stay in the object store and outlive the builder that made them."""

from __future__ import annotations

import numpy as np
import pytest

from launch.builders import BuilderPool, RoundBuilder
from rl.config import DataConfig
from rl.data.synthetic import generate_synthetic
from rl.inputs import InputBuilder
from rl.pixels import with_media
from rl.stream import PromptStream
from rl.types import Sample

K = 3


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Sample]:
    """Synthetic video samples with two whose media is missing (skipped, counted, refilled)."""
    good = generate_synthetic(tmp_path_factory.mktemp("synthetic"), 10, seed=0)
    bad = [Sample(id=f"missing{i}", source="test", problem_type="exact_match", question="?", answer="A",
                  media_kind="video", media_path=f"/nonexistent/{i}.mp4") for i in range(2)]
    return good[:2] + bad[:1] + good[2:6] + bad[1:] + good[6:]


DATA = DataConfig(max_frames=4, total_pixels_tokens=32, max_pixels_tokens=8, min_pixels_tokens=4, shuffle=True)


def _rounds(samples, builder=None, pool=None) -> tuple[RoundBuilder, list[str]]:
    skipped: list[str] = []
    stream = PromptStream(samples, seed=3, shuffle=True)
    return RoundBuilder(stream, builder, pool, lambda exc: skipped.append(exc.sample_id), max_skips=100), skipped


def _ids(prompts) -> list[str]:
    return [p.sample.id for p in prompts]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_pool_with_prefetch_builds_what_the_driver_builds(ray_cluster, tiny_qwen25, samples):
    serial, serial_skips = _rounds(samples, builder=InputBuilder(str(tiny_qwen25), DATA))
    want = [serial.next_round(K) for _ in range(5)]
    positions = []

    pool = BuilderPool(str(tiny_qwen25), DATA, num_workers=2)
    try:
        parallel, parallel_skips = _rounds(samples, pool=pool)
        got = []
        for _ in range(5):
            got.append(parallel.next_round(K))
            positions.append(parallel.position)
            parallel.prefetch(K, depth=2)  # two rounds ahead: a refill must rewind them
        assert [_ids(r) for r in got] == [_ids(r) for r in want]
        assert [p.prompt_ids for r in got for p in r] == [p.prompt_ids for r in want for p in r]
        assert parallel_skips == serial_skips and len(serial_skips) >= 2
        assert positions[-1] == serial.position  # a checkpoint records the same position...
        assert parallel.stream.samples_consumed > parallel.position  # ...while later rounds are in flight

        # The frames stay in the object store (owned by the driver): a prompt carries a reference,
        # and `with_media` fetches the frames the driver would have built.
        first = got[0]
        assert all(p.mm_data == {} and p.mm_ref is not None for p in first)
        for fetched, built_here in zip(with_media(first), want[0]):
            assert fetched.mm_ref is None and set(fetched.mm_data) == {"video"}
            assert np.array_equal(fetched.mm_data["video"][0], built_here.mm_data["video"][0])
            assert fetched.mm_data["video"][1] == built_here.mm_data["video"][1]

        # A dead builder given work: replaced, its samples rebuilt, the restart counted.
        import ray

        resumed, _ = _rounds(samples, pool=pool)
        resumed.stream.samples_consumed = resumed.position = positions[1]  # as after a resume at round 2
        ray.kill(pool.workers[0])  # before the round is submitted, so its builds surely hit the dead actor
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(pool.workers[0].ready.remote())
        assert len(with_media(got[0])) == K, "frames built by the dead builder outlive it (the driver owns them)"
        resumed.prefetch(K, depth=1)
        again = [resumed.next_round(K) for _ in range(3)]
        assert [_ids(r) for r in again] == [_ids(r) for r in want[2:5]]
        assert pool.restarts == 1
    finally:
        pool.shutdown()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_pixels_rebuilt_from_frames_are_bit_identical(family, tiny_qwen25, tiny_qwen3):
    """A built prompt travels with uint8 frames only; the learner's rebuild equals the renderer's tensors."""
    import pickle

    import torch
    from test_mixed_modality import mixed_round

    from rl.pixels import PixelMaker, needs_pixels, strip_pixels

    model_dir = tiny_qwen25 if family == "qwen2_5_vl" else tiny_qwen3
    inputs, _, _ = mixed_round(model_dir)
    prompts = list({id(mi): mi for mi in inputs}.values())
    maker = PixelMaker(str(model_dir))
    kinds = set()
    for mi in prompts:
        light = strip_pixels(mi)
        assert not any(k.startswith("pixel_values") for k in light.hf_inputs)
        assert needs_pixels(light) == (mi.sample.media_kind != "none")
        back = maker.restore([light, light])
        assert back[0] is back[1], "copies of a prompt stay one object"
        assert set(back[0].hf_inputs) == set(mi.hf_inputs)
        for key, value in mi.hf_inputs.items():
            assert torch.equal(torch.as_tensor(back[0].hf_inputs[key]), torch.as_tensor(value)), key
        if mi.sample.media_kind == "video":
            assert len(pickle.dumps(light)) * 3 < len(pickle.dumps(mi))  # uint8 frames vs float32 pixels + frames
        kinds.add(mi.sample.media_kind)
    assert kinds == {"none", "image", "video"}
