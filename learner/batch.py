"""Prompt+response sequences with their video inputs, packed into micro-batches, and their log-probs.

Batching several sequences whose videos differ in size is safe for Qwen2.5-VL and Qwen3-VL in
transformers 5.19 (checked against one-sequence forwards to ~5e-7 in fp32): the vision tensors of a
batch are the per-video tensors concatenated along dim 0 in row order (`pixel_values_videos`
(sum of patches, C), `video_grid_thw` (videos, 3), `second_per_grid_ts` (videos,), likewise for
images), and the 3-D RoPE index walks the rows in order, reading each row's valid tokens from the
attention mask and their modality from `mm_token_type_ids`. Rows are right-padded; a text-only
row simply contributes no vision tensors.

Only response logits are computed: `logits_to_keep` takes the positions from the shortest prompt's
last token on, so the (B, T, vocab) tensor covers responses rather than whole prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

TOKEN_TYPE_KEY = "mm_token_type_ids"


@dataclass
class Sequence:
    """One prompt+response to score or train on."""

    prompt_ids: list[int]
    response_ids: list[int]
    hf_inputs: dict[str, Any]
    """The processor's tensors of the prompt (batch dim 1), without input_ids / attention_mask."""
    advantage: float = 0.0

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class MicroBatch:
    """Model kwargs of a right-padded batch plus where each row's response log-probs come from."""

    model_inputs: dict[str, Tensor]
    logit_index: Tensor
    """(B, R): position in the kept logits that predicts each response token."""
    targets: Tensor
    """(B, R): response token ids (0 on padding)."""
    mask: Tensor
    """(B, R): 1 on real response tokens."""
    advantages: Tensor
    """(B,)"""

    def to(self, device: torch.device | str) -> "MicroBatch":
        return MicroBatch(
            model_inputs={k: v.to(device) for k, v in self.model_inputs.items()},
            logit_index=self.logit_index.to(device),
            targets=self.targets.to(device),
            mask=self.mask.to(device),
            advantages=self.advantages.to(device),
        )


def collate(seqs: list[Sequence], pad_id: int) -> MicroBatch:
    """Right-pad the rows, extend `mm_token_type_ids` with zeros over responses and padding, concat vision tensors."""
    if not seqs:
        raise ValueError("collate needs at least one sequence")
    if any(not s.response_ids for s in seqs):
        raise ValueError("every sequence needs at least one response token")
    batch, length = len(seqs), max(len(s) for s in seqs)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    token_types = torch.zeros((batch, length), dtype=torch.long)
    vision: dict[str, list[Tensor]] = {}
    for row, seq in enumerate(seqs):
        ids = seq.prompt_ids + seq.response_ids
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        if TOKEN_TYPE_KEY in seq.hf_inputs:
            types = torch.as_tensor(seq.hf_inputs[TOKEN_TYPE_KEY]).reshape(-1)
            token_types[row, : types.numel()] = types
        for key, value in seq.hf_inputs.items():
            if key != TOKEN_TYPE_KEY:
                vision.setdefault(key, []).append(torch.as_tensor(value))

    first = min(len(s.prompt_ids) for s in seqs) - 1
    max_response = max(len(s.response_ids) for s in seqs)
    logit_index = torch.zeros((batch, max_response), dtype=torch.long)
    targets = torch.zeros((batch, max_response), dtype=torch.long)
    mask = torch.zeros((batch, max_response), dtype=torch.long)
    for row, seq in enumerate(seqs):
        n = len(seq.response_ids)
        # The logit at position p predicts token p + 1: response token t sits at len(prompt) + t.
        logit_index[row, :n] = torch.arange(n) + len(seq.prompt_ids) - 1 - first
        targets[row, :n] = torch.tensor(seq.response_ids, dtype=torch.long)
        mask[row, :n] = 1

    model_inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        TOKEN_TYPE_KEY: token_types,
        "logits_to_keep": torch.arange(first, length - 1),
        **{key: torch.cat(values, dim=0) for key, values in vision.items()},
    }
    advantages = torch.tensor([s.advantage for s in seqs], dtype=torch.float32)
    return MicroBatch(model_inputs, logit_index, targets, mask, advantages)


def plan_micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Index groups whose padded size (rows x longest row) fits `token_budget`, longest first.

    Sorting by length keeps padding small; a sequence longer than the budget goes alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= token_budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class ResponseScores:
    logp: Tensor
    """(B, R) log-prob of each response token under logits / temperature (0 on padding)."""
    entropy: Optional[Tensor]
    """(B, R) entropy of the tempered distribution at each response token, detached (0 on padding)."""


def response_logprobs(model: torch.nn.Module, mb: MicroBatch, temperature: float = 1.0, with_entropy: bool = False) -> ResponseScores:
    """Forward `mb` through `model` (an HF Qwen-VL model or a DeepSpeed engine around one) and score the responses.

    Logits are divided by the sampling temperature before the log-softmax (method.md section 4).
    """
    logits = model(**mb.model_inputs, use_cache=False).logits
    index = mb.logit_index.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    logits = torch.gather(logits, 1, index).float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logp = torch.gather(logits, 2, mb.targets.unsqueeze(-1)).squeeze(-1) - log_norm
    logp = torch.where(mb.mask > 0, logp, torch.zeros_like(logp))
    entropy = None
    if with_entropy:
        with torch.no_grad():
            probs = torch.softmax(logits, dim=-1)
            entropy = log_norm - (probs * logits).sum(-1)
            entropy = torch.where(mb.mask > 0, entropy, torch.zeros_like(entropy))
    return ResponseScores(logp, entropy)
