"""The DeepSpeed learner on CPU: real Ray actors, real DeepSpeed (gloo), tiny Qwen-VL models with video.

Two learner ranks train a fixed batch: ZeRO-2 on Qwen2.5-VL and ZeRO-3 on Qwen3-VL, so both
families and both stages run once. In-process 1-rank learners cover what needs no second rank.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os

import numpy as np
import pytest
import torch

from learner.batch import Sequence, collate, plan_micro_batches, response_logprobs
from learner.params import is_trainable
from learner.worker import Learner, distributed_env, free_port, lr_factor
from rl.config import Config
from rl.family import suppressed_token_ids
from rl.grpo import group_advantages
from rl.mrope import load_vl_model
from rl.render import PromptRenderer
from rl.types import Clip, Generation, ModelInput, Sample
from rl.weight_sync.broadcast import WeightReceiver
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec, plan_buckets

G = 4
STEPS = 3
LR = 1e-3
BUDGET = 600


def _clip(patch: int, t: int, h: int, w: int, seed: int) -> Clip:
    f = 2 * patch
    frames = np.random.default_rng(seed).integers(0, 255, (t, h * f, w * f, 3), dtype=np.uint8)
    return Clip(frames=frames, indices=list(range(0, 2 * t, 2)), video_fps=4.0, total_frames=2 * t, duration=t / 2, sample_fps=2.0)


def make_batch(model_dir) -> tuple[list[ModelInput], list[list[int]], list[float]]:
    """Two video prompts of different sizes x G responses (random non-special tokens), group advantages."""
    renderer = PromptRenderer(str(model_dir))
    patch = 14 if renderer.family == "qwen2_5_vl" else 16
    sample = Sample(id="v", source="test", problem_type="exact_match", question="What moves?\nA. a\nB. b", answer="A", media_kind="video")
    prompts = [renderer.render(sample, _clip(patch, 4, 1, 2, seed=1)), renderer.render(sample, _clip(patch, 2, 2, 1, seed=2))]
    rng = np.random.default_rng(0)
    inputs = [p for p in prompts for _ in range(G)]
    # The second video's responses are longer: with the test's token budget its rank runs more
    # micro-batches than the other, so the other pads with zero-weight ones to stay in step.
    lengths = [int(rng.integers(3, 12)) for _ in range(G)] + [int(rng.integers(60, 80)) for _ in range(G)]
    responses = [rng.integers(10, 600, n).tolist() for n in lengths]
    rewards = torch.tensor([0.0, 1.0, 3.0, 1.1, 2.9, 0.2, 0.0, 1.0])
    return inputs, responses, group_advantages(rewards, G).advantages.tolist()


def make_config(model_dir, grpo: dict | None = None, **learner) -> Config:
    return Config.model_validate(
        {
            "model": {"path": str(model_dir)},
            "learner": {"lr": LR, "micro_batch_tokens": BUDGET, **learner},
            "grpo": grpo or {},
            "trainer": {"prompts_per_round": 2, "steps_per_round": 1},
            "rollout": {"n": G},
            "cluster": {"device": "cpu"},
        }
    )


# ---- pure pieces ----------------------------------------------------------------------------


def test_lr_schedule_warmup_constant_cosine():
    assert [lr_factor(s, "constant", 2, None) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert [lr_factor(s, "cosine", 1, 5) for s in (0, 1, 3, 5, 9)] == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError):
        lr_factor(3, "cosine", 0, None)


def test_micro_batches_respect_the_token_budget():
    lengths = [100, 300, 120, 290, 50]
    groups = plan_micro_batches(lengths, token_budget=600)
    assert sorted(i for g in groups for i in g) == list(range(5))
    assert all(len(g) * max(lengths[i] for i in g) <= 600 or len(g) == 1 for g in groups)
    assert plan_micro_batches([700, 10], token_budget=600) == [[0], [1]]


def test_buckets_are_consecutive_and_bounded():
    metas = [ParamMeta(f"p{i}", (n,), torch.float32) for i, n in enumerate([10, 10, 30, 5, 5])]
    buckets = plan_buckets(metas, bucket_bytes=80)
    assert [[m.name for m in b] for b in buckets] == [["p0", "p1"], ["p2"], ["p3", "p4"]]


def test_freeze_rule_names():
    assert is_trainable("model.language_model.layers.0.mlp.up_proj.weight")
    assert is_trainable("lm_head.weight")
    assert is_trainable("model.visual.merger.mlp.0.weight")
    assert is_trainable("model.visual.deepstack_merger_list.0.linear_fc1.weight")
    assert not is_trainable("model.visual.blocks.0.attn.qkv.weight")
    assert not is_trainable("model.visual.patch_embed.proj.weight")
    assert is_trainable("model.visual.blocks.0.attn.qkv.weight", freeze_vision=False)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_batched_forward_matches_one_sequence_at_a_time(family, tiny_qwen25, tiny_qwen3):
    """Rows with videos of different sizes (and a text-only row) batch safely: same log-probs as alone."""
    model_dir = tiny_qwen25 if family == "qwen2_5_vl" else tiny_qwen3
    inputs, responses, _ = make_batch(model_dir)
    text_only = PromptRenderer(str(model_dir)).render(Sample(id="t", source="test", problem_type="math", question="1+1?", answer="2"))
    seqs = [Sequence(inputs[0].prompt_ids, responses[0], inputs[0].hf_inputs), Sequence(inputs[G].prompt_ids, responses[G], inputs[G].hf_inputs),
            Sequence(text_only.prompt_ids, [40, 41, 42], text_only.hf_inputs)]
    model = load_vl_model(model_dir, attn_implementation="sdpa").eval()
    with torch.no_grad():
        batched = response_logprobs(model, collate(seqs, pad_id=0), temperature=0.7, with_entropy=True)
        for row, seq in enumerate(seqs):
            alone = response_logprobs(model, collate([seq], pad_id=0), temperature=0.7, with_entropy=True)
            n = len(seq.response_ids)
            assert torch.allclose(batched.logp[row, :n], alone.logp[0], atol=1e-5)
            assert torch.allclose(batched.entropy[row, :n], alone.entropy[0], atol=1e-5)
            assert (batched.logp[row, n:] == 0).all()


# ---- one rank, in process -------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_rank_world():
    """This pytest process as a 1-rank torch.distributed world (gloo)."""
    os.environ.update(distributed_env(0, 1, "127.0.0.1", free_port()))


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.slow
def test_no_reference_without_kl_and_nonfinite_loss_skips_the_step(one_rank_world, tiny_qwen25):
    learner = Learner(make_config(tiny_qwen25, grpo={"kl_coef": 0.0}, zero_stage=2))
    assert learner.ref is None
    inputs, responses, advantages = make_batch(tiny_qwen25)

    before = learner.full_state_dict()
    bad = list(advantages)
    bad[0] = float("nan")
    stats = learner.train_round(inputs, responses, bad, num_steps=1)
    assert stats["nonfinite_loss"] and stats["steps_applied"] == 0
    assert not _changed(before, learner.full_state_dict())

    stats = learner.train_round(inputs, responses, advantages, num_steps=1)
    assert not stats["nonfinite_loss"] and stats["steps_applied"] == 1
    assert stats["kl"] == 0.0
    assert _changed(before, learner.full_state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_micro_batching_does_not_change_the_update(one_rank_world, tiny_qwen25, stage):
    """Same data, one micro-batch per step vs one sequence per micro-batch: same losses and grad norms."""
    inputs, responses, advantages = make_batch(tiny_qwen25)
    pick = [0, 1, G, G + 1]  # two responses to each of the two videos
    inputs, responses, advantages = ([x[i] for i in pick] * 2 for x in (inputs, responses, advantages))
    runs = []
    for budget in (100_000, 1):
        learner = Learner(make_config(tiny_qwen25, grpo={"kl_coef": 0.0}, zero_stage=stage, micro_batch_tokens=budget))
        runs.append(learner.train_round(inputs, responses, advantages, num_steps=2)["per_step"])
        del learner
    for whole, split in zip(*runs):
        for key in ("loss", "kl", "grad_norm", "entropy", "clip_frac", "tokens"):
            assert split[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6), key


# ---- two ranks, Ray actors --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module", params=[("qwen2_5_vl", 2), ("qwen3_vl", 3)], ids=["qwen2_5_vl-zero2", "qwen3_vl-zero3"])
def group(request, ray_cluster, tiny_qwen25, tiny_qwen3):
    from learner.group import LearnerGroup

    family, stage = request.param
    model_dir = tiny_qwen25 if family == "qwen2_5_vl" else tiny_qwen3
    grp = LearnerGroup(make_config(model_dir, world_size=2, zero_stage=stage))
    yield grp, model_dir
    grp.shutdown()


@pytest.mark.slow
def test_group_trains_the_fixed_batch(group):
    group, model_dir = group
    inputs, responses, advantages = make_batch(model_dir)
    assert group.has_reference()
    before = group.full_state_dict()
    # The same mini-batch in each of the round's STEPS steps: old log-probs are those of the
    # initial policy, so the clipped surrogate improves step over step.
    rollout_lp = [[-6.0] * len(r) for r in responses]
    stats = group.train(inputs * STEPS, responses * STEPS, advantages * STEPS, rollout_logprobs=rollout_lp * STEPS, num_steps=STEPS)
    after = group.full_state_dict()

    rank_lengths = [[len(inputs[i].prompt_ids) + len(responses[i]) for i in range(r * G, (r + 1) * G)] for r in range(2)]
    assert len({len(plan_micro_batches(lengths, BUDGET)) for lengths in rank_lengths}) == 2  # ranks differ

    steps = stats["per_step"]
    assert stats["steps_applied"] == STEPS and not stats["nonfinite_loss"]
    assert steps[-1]["loss"] < steps[0]["loss"] - 1e-3
    assert steps[0]["ratio_min"] == pytest.approx(1.0, abs=1e-5) and steps[0]["ratio_max"] == pytest.approx(1.0, abs=1e-5)
    assert steps[-1]["ratio_max"] > 1.01
    assert steps[-1]["kl"] > 0
    assert steps[0]["sequences"] == 2 * G and steps[0]["tokens"] == sum(len(r) for r in responses)
    assert all(np.isfinite(s["grad_norm"]) and s["grad_norm"] > 0 and s["lr"] == LR for s in steps)
    assert stats["entropy"] > 0 and stats["rollout_logprob_abs_diff"] > 0
    assert stats["seconds_old_logprobs"] > 0 and stats["seconds_ref_logprobs"] > 0 and stats["seconds_train"] > 0

    trainable = {n for n in before if is_trainable(n)}
    assert trainable and trainable != set(before)
    assert _changed(before, after) == trainable


@pytest.mark.slow
def test_trainable_meta_names_shapes_dtypes(group):
    group, model_dir = group
    metas = group.named_trainable_parameters_meta()
    state = group.full_state_dict()
    trainable = [n for n in state if is_trainable(n)]
    # Sync order: module order under ZeRO-3 (the gathers' order), memory order otherwise (in-place buckets).
    assert sorted(m.name for m in metas) == sorted(trainable) and len(metas) == len(trainable)
    if group.cfg.learner.zero_stage == 3:
        assert [m.name for m in metas] == trainable
    assert all(m.shape == tuple(state[m.name].shape) and m.dtype == state[m.name].dtype for m in metas)
    assert any(m.name.startswith("model.visual.merger.") for m in metas)
    assert all(m.name.startswith(("model.language_model.", "model.visual.merger.", "model.visual.deepstack_merger_list.", "lm_head."))
               for m in metas)


@pytest.mark.slow
def test_checkpoint_round_trip(group, tmp_path):
    group, model_dir = group
    inputs, responses, advantages = make_batch(model_dir)
    group.save_checkpoint(str(tmp_path / "ckpt"))
    saved_params, saved_optim = group.full_state_dict(), group.optimizer_state_digests()

    group.train(inputs, responses, advantages, num_steps=1)
    assert _changed(saved_params, group.full_state_dict())
    assert group.optimizer_state_digests() != saved_optim

    group.load_checkpoint(str(tmp_path / "ckpt"))
    assert not _changed(saved_params, group.full_state_dict())
    assert group.optimizer_state_digests() == saved_optim


def _files(path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(path)): (f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.rglob("*")) if f.is_file()}


def _assert_same(want: dict, got: dict) -> None:
    assert set(got) == set(want) and not _changed(want, got)


@pytest.mark.slow
def test_resume_on_another_world_size_and_zero_stage(ray_cluster, one_rank_world, tiny_qwen25, tmp_path):
    """2 ranks ZeRO-3 -> 1 rank ZeRO-2 -> 2 ranks ZeRO-3: weights, Adam state and lr schedule carry over,
    and the next step is the one the run would have taken without the change. The 1-rank learner
    runs in this process (a third actor start would cost ~8 s).

    Tolerance of that step: the layouts only reorder fp32 sums (a gradient reduced over 1 or 2 ranks,
    in other micro-batches), so loss and grad norm agree to ~1e-8. The update of a parameter whose
    exact gradient is 0 (the key biases: softmax ignores a shift shared by a query's logits) is
    Adam-normalised rounding noise, bounded by lr |m| / eps: up to 5e-7 measured, hence 1e-5 (1% of
    lr = 1e-3). A lost moment, step count, warmup position or group weight decay moves updates by a
    good share of lr (7e-5 for DeepSpeed's ZeRO-3 loader sharing one step tensor between groups).
    """
    from learner.group import LearnerGroup

    inputs, responses, advantages = make_batch(tiny_qwen25)

    def config(world_size: int, stage: int) -> Config:
        # No reference model (kl_coef 0): it is the base model, never in a checkpoint, and costs each start a copy.
        return make_config(tiny_qwen25, grpo={"kl_coef": 0.0}, world_size=world_size, zero_stage=stage, warmup_steps=4)

    @contextlib.contextmanager
    def two_ranks_zero3():
        grp = LearnerGroup(config(2, 3))
        try:
            yield grp
        finally:
            grp.shutdown()

    def step(learner):
        train = learner.train if isinstance(learner, LearnerGroup) else learner.train_round
        return train(inputs, responses, advantages, num_steps=1)["per_step"][0]

    def state(grp):
        return grp.full_state_dict(), grp.full_optimizer_state()

    def assert_next_step_matches(want_stats, want_params, grp):
        got = step(grp)
        assert got["lr"] == want_stats["lr"]  # the warmup went on from where it was
        for key in ("loss", "grad_norm", "entropy"):
            assert got[key] == pytest.approx(want_stats[key], rel=1e-5, abs=1e-7), key
        params = grp.full_state_dict()
        assert max((params[k] - want_params[k]).abs().max().item() for k in params) < 1e-5

    with two_ranks_zero3() as first:
        step(first)
        first.save_checkpoint(str(tmp_path / "a"))
        saved_a = state(first)
        reference_stats, reference_params = step(first), first.full_state_dict()  # no layout change
    original = _files(tmp_path / "a")
    interrupted = tmp_path / ".a-universal.tmp" / "learner"  # a conversion killed halfway: not trusted, redone
    interrupted.mkdir(parents=True)
    (interrupted / "latest_universal").write_text("learner")

    second = Learner(config(1, 2))
    second.load_checkpoint(str(tmp_path / "a"))
    for want, got in zip(saved_a, state(second)):
        _assert_same(want, got)
    assert saved_a[1]["step"] == 1
    assert _files(tmp_path / "a") == original and (tmp_path / "a-universal").is_dir() and not interrupted.exists()
    assert_next_step_matches(reference_stats, reference_params, second)
    second.save_checkpoint(str(tmp_path / "b"))
    saved_b = state(second)
    reference_stats, reference_params = step(second), second.full_state_dict()
    del second

    with two_ranks_zero3() as third:
        third.load_checkpoint(str(tmp_path / "b"))
        for want, got in zip(saved_b, state(third)):
            _assert_same(want, got)
        assert saved_b[1]["step"] == 2
        assert_next_step_matches(reference_stats, reference_params, third)


@pytest.mark.slow
def test_hf_export_reproduces_the_learner_logprobs(group, tmp_path):
    group, model_dir = group
    from safetensors import safe_open
    from transformers import AutoProcessor

    inputs, responses, advantages = make_batch(model_dir)
    group.train(inputs, responses, advantages, num_steps=1)
    out = tmp_path / "hf"
    group.export_hf(str(out))
    learner_lp = group.logprobs(inputs, responses)

    seqs = [Sequence(mi.prompt_ids, r, mi.hf_inputs) for mi, r in zip(inputs, responses)]
    AutoProcessor.from_pretrained(out)
    with torch.no_grad():
        exported = load_vl_model(out, attn_implementation="sdpa").eval()
        suppressed = suppressed_token_ids(model_dir)  # the learner's definition (learner.batch.response_logprobs)
        scores = response_logprobs(exported, collate(seqs, pad_id=0), suppressed=suppressed)
        base = load_vl_model(model_dir, attn_implementation="sdpa").eval()
        base_scores = response_logprobs(base, collate(seqs, pad_id=0), suppressed=suppressed)
    for row, lp in enumerate(learner_lp):
        assert torch.allclose(scores.logp[row, : len(lp)], torch.tensor(lp), atol=1e-4)
    assert not torch.allclose(scores.logp, base_scores.logp, atol=1e-3)  # the export is the trained policy

    def keys(path):
        with safe_open(str(path), "pt") as f:
            return set(f.keys())

    # Same tensor names as the source checkpoint: vLLM loads the export exactly as it loads the base.
    assert keys(out / "model.safetensors") == keys(model_dir / "model.safetensors")


@pytest.mark.slow
def test_trainer_view_takes_prompts_and_generations(group):
    group, model_dir = group
    inputs, responses, advantages = make_batch(model_dir)
    prompts = [inputs[0], inputs[G]]
    generations = [[Generation(r, [-1.0] * len(r), "", "stop") for r in responses[k * G:(k + 1) * G]] for k in range(2)]
    metrics = group.train_round(prompts, generations, advantages)
    assert metrics["train/steps"] == 1 and metrics["train/skipped_nonfinite"] == 0
    assert metrics["train/sequences"] == 2 * G and metrics["time/update"] > 0 and metrics["time/logprobs"] > 0
    assert all(isinstance(v, float) for v in metrics.values())


def test_shards_cover_every_sample_once_in_step_order_even_when_uneven():
    from learner.group import LearnerGroup

    group = LearnerGroup.__new__(LearnerGroup)
    group.world_size = 24
    shards = group._shards(2048, 8)
    flat = sorted(i for shard in shards for i in shard)
    assert flat == list(range(2048))
    assert {len(s) for s in shards} == {80, 88}, "256 per step over 24 ranks: 10 or 11 each"
    for shard in shards:
        per_step = len(shard) // 8
        steps = [shard[k * per_step:(k + 1) * per_step] for k in range(8)]
        assert all(256 * k <= i < 256 * (k + 1) for k, step in enumerate(steps) for i in step)
    group.world_size = 2
    assert group._shards(8, 2) == [[0, 1, 4, 5], [2, 3, 6, 7]]
    with pytest.raises(ValueError, match="cannot feed"):
        group.world_size = 5
        group._shards(8, 2)


def _sync_receiver(spec: SyncGroupSpec, metas: list[ParamMeta], queue) -> None:
    # numpy, not tensors: a tensor crosses a torch queue as a shared fd, gone when this process exits.
    queue.put({name: tensor.numpy().copy() for name, tensor in WeightReceiver(spec, 1, metas).receive()})


@pytest.mark.slow
def test_zero2_weight_sync_goes_out_in_place_and_intact(one_rank_world, tiny_qwen25):
    """ZeRO-2 parameters are views of DeepSpeed's flat buffers; in memory order, buckets need no packing."""
    learner = Learner(make_config(tiny_qwen25, grpo={"kl_coef": 0.0}, zero_stage=2))
    metas = learner.named_trainable_parameters_meta()
    spec = SyncGroupSpec("127.0.0.1", free_port(), 2, "gloo", 60.0, 64 << 10)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_sync_receiver, args=(spec, metas, queue))
    proc.start()
    try:
        learner.init_sync_sender(spec)
        stats = learner.broadcast_weights()
        got = queue.get(timeout=60)
    finally:
        proc.join(timeout=60)
        if learner.sync.sender is not None:
            learner.sync.sender.close()
    want = learner.full_state_dict()
    assert list(got) == [m.name for m in metas]
    assert set(got) == {name for name, p in learner.module.named_parameters() if p.requires_grad}
    assert all(torch.equal(torch.from_numpy(got[name]), want[name]) for name in got)
    # Two flat buffers (decayed, not decayed): at most the one bucket across their border is packed.
    assert stats["sync/buckets"] > 4 and stats["sync/buckets_in_place"] >= stats["sync/buckets"] - 1
