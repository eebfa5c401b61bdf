"""The offline tiny policy for demos and tests: a random tiny model, optionally warm-started on the format.

A random model almost never writes `\\boxed{a1}<think>...</think>\\boxed{a2}`, so GRPO on it would
see only zero rewards. The warm start teaches the output format with a short supervised run whose
target answers are drawn at random from each task's answer space (a letter, a count, an interval):
the model learns the grammar, not the tasks, so accuracy it gains later comes from RL. Where a1 is
an option letter, its target is the uniform distribution over the options (the cross-entropy to it),
not the drawn letter: sampled letters would leave the policy preferring whichever letters came last,
per video, and GRPO then mostly sharpens those; uniform a1 leaves every option equally likely, the
most exploration RL can start from. a2 copies a1 (teacher-forced), as a reviewed answer may. The paper
uses no warm start (its base model follows the system prompt); this exists for the tiny models only.

`resolve_model_path("tiny:qwen2_5_vl", ...)` builds and caches such a model under `artifacts/`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from rl.config import DataConfig, ModelConfig
from rl.data.synthetic import KINDS, generate_synthetic
from rl.family import FAMILIES
from rl.inputs import InputBuilder, SampleError
from rl.mrope import load_vl_model
from rl.problems import problem
from rl.prompts import LETTERS
from rl.tiny import build_tiny
from rl.types import ModelInput, Sample

ARTIFACTS = Path("artifacts")
THOUGHT = "Let me look at the frames again."
"""The one review text the warm start writes: a sample's only choices are then its answers, so GRPO's
gradient carries the answer signal, not the noise of picking among filler sentences."""


def format_target(sample: Sample, rng: np.random.Generator) -> str:
    """`\\boxed{x}<think>...</think>\\boxed{x}` with a random well-formed x."""
    answer = problem(sample.problem_type).random_answer(sample, rng)
    return f"\\boxed{{{answer}}}<think>{THOUGHT}</think>\\boxed{{{answer}}}"


def warm_start(model_dir: Path, out_dir: Path, samples: Sequence[Sample], data: DataConfig, steps: int,
               *, lr: float = 2e-3, seed: int = 0) -> Path:
    """Supervised steps on format targets (loss on the response only), saved as an HF model dir."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    builder = InputBuilder(str(model_dir), data)
    eos = builder.tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = load_vl_model(model_dir, dtype=torch.float32)
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    inputs = []
    for s in samples:
        try:
            inputs.append(builder.build(s))
        except SampleError:
            continue
    if not inputs:
        raise ValueError("warm start: no usable sample")
    loss = torch.zeros(())
    for _ in range(steps):
        mi = inputs[int(rng.integers(len(inputs)))]
        target = builder.tokenizer(format_target(mi.sample, rng), add_special_tokens=False)["input_ids"] + [eos]
        loss = response_loss(model, mi, target, spread=letter_slot(builder.tokenizer, mi.sample, target))
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
    meta = {"warm_start_steps": steps, "final_loss": float(loss.detach()), "seed": seed}
    return save_model_dir(model, builder.renderer.processor, out_dir, "thinkonce_tiny.json", meta)


def letter_slot(tokenizer: Any, sample: Sample, target: list[int]) -> Optional[tuple[int, list[int]]]:
    """(index in `target` of a1's option letter, the token ids of every option letter), or None when
    a1 is not an option letter (counts, intervals) or the letters are not single tokens here."""
    if not sample.options or not problem(sample.problem_type).letter_answer:
        return None
    prefix = tokenizer("\\boxed{", add_special_tokens=False)["input_ids"]
    letters = [tokenizer(letter, add_special_tokens=False)["input_ids"] for letter in LETTERS[: len(sample.options)]]
    if target[: len(prefix)] != prefix or any(len(ids) != 1 for ids in letters):
        return None
    return len(prefix), [ids[0] for ids in letters]


def forward_after_prompt(model: torch.nn.Module, mi: ModelInput, continuation: list[int], **kwargs: Any) -> Any:
    """The HF model's output on `mi`'s prompt followed by `continuation` (text tokens)."""
    ids = torch.tensor([mi.prompt_ids + continuation])
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), **mi.hf_inputs_with_text(len(continuation)), **kwargs)


def response_loss(model: torch.nn.Module, mi: ModelInput, target: list[int],
                  spread: Optional[tuple[int, list[int]]] = None) -> torch.Tensor:
    """Teacher-forced cross-entropy of `target` after the prompt (prompt tokens carry no loss), the
    mean over target tokens. `spread` = (i, ids): at target position i the target is the uniform
    distribution over `ids`, i.e. the loss there is -mean_j log p(ids_j)."""
    if spread is None:
        labels = torch.tensor([[-100] * len(mi.prompt_ids) + target])
        return forward_after_prompt(model, mi, target, labels=labels).loss
    logits = forward_after_prompt(model, mi, target).logits[0]
    logp = logits[len(mi.prompt_ids) - 1 : -1].float().log_softmax(-1)  # position t predicts target[t]
    nll = -logp.gather(1, torch.tensor(target)[:, None])[:, 0]
    slot, candidates = spread
    nll = torch.cat([nll[:slot], -logp[slot, candidates].mean()[None], nll[slot + 1 :]])
    return nll.mean()


def save_model_dir(model: torch.nn.Module, processor: Any, out_dir: Path, marker: str, meta: dict[str, Any]) -> Path:
    """Write an HF model directory under a temporary name and rename it into place when complete."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    (tmp / marker).write_text(json.dumps(meta))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


WARM_START_VERSION = 4
"""Part of the cached warm-started model's name; raised whenever what the warm start trains on changes
(2: Qwen2.5-VL positions after a video follow the reference rule, rl.mrope; 3: the official training
prompts, rl.prompts; 4: a1's option letter learns the uniform distribution, one review text), so no stale copy is reused."""


def resolve_model_path(model: ModelConfig, data: DataConfig, seed: int = 0) -> Path:
    """The policy's model directory; `tiny:<family>` is built (and warm-started) once and cached."""
    if not model.path.startswith("tiny:"):
        path = Path(model.path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.path {model.path}: not an HF model directory (no config.json)")
        return path
    family = model.path.split(":", 1)[1]
    if family not in FAMILIES:
        raise ValueError(f"model.path {model.path}: unknown tiny family, expected tiny:{' or tiny:'.join(FAMILIES)}")
    base = ARTIFACTS / f"tiny-{family}-s{seed}"
    if not (base / "model.safetensors").is_file():
        build_tiny(family, base, seed=seed)  # type: ignore[arg-type]
    if model.tiny_warm_start_steps == 0:
        return base
    # The format is taught on the families the run trains on (random answers either way); a run on
    # other families than the default mix gets a warm start of its own.
    kinds = tuple(data.synthetic_kinds)
    tag = "" if kinds == KINDS and data.synthetic_shuffle_options else "-" + "-".join(kinds) + ("" if data.synthetic_shuffle_options else "-fixed")
    warm = ARTIFACTS / f"tiny-{family}-s{seed}-warm{model.tiny_warm_start_steps}{tag}-v{WARM_START_VERSION}"
    if not (warm / "model.safetensors").is_file():
        samples = generate_synthetic(ARTIFACTS / f"synthetic-warmstart{tag}", data.synthetic_num_samples, seed=data.seed,
                                     kinds=kinds, shuffle_options=data.synthetic_shuffle_options)
        warm_start(base, warm, samples, data, model.tiny_warm_start_steps, seed=seed)
    return warm
