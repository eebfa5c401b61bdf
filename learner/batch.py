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

Two layouts feed the same scoring: `collate` (one row per sequence, the reference) and
`collate_shared` (one row per (sub)group of responses to one prompt, learner.prefix). Either way a
MicroBatch's scores come out per sequence, in the order the sequences were given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Optional

import torch
from torch import Tensor

from learner.prefix import PAD, PROMPT, Packing, shared_prefix_inputs

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
    """(N, R): position in its row's kept logits that predicts each response token (N sequences)."""
    targets: Tensor
    """(N, R): response token ids (0 on padding)."""
    mask: Tensor
    """(N, R): 1 on real response tokens."""
    advantages: Tensor
    """(N,)"""
    row: Tensor
    """(N,): the model row each sequence sits in (its own with `collate`, its group's with `collate_shared`)."""
    packing: Optional[Packing] = None
    """Set by `collate_shared`: the model also needs explicit positions and the prefix-sharing mask."""

    def to(self, device: torch.device | str) -> "MicroBatch":
        return MicroBatch(
            model_inputs={k: v.to(device) for k, v in self.model_inputs.items()},
            logit_index=self.logit_index.to(device),
            targets=self.targets.to(device),
            mask=self.mask.to(device),
            advantages=self.advantages.to(device),
            row=self.row.to(device),
            packing=self.packing.to(device) if self.packing is not None else None,
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
    return MicroBatch(model_inputs, logit_index, targets, mask, advantages, torch.arange(batch))


def collate_shared(seqs: list[Sequence], units: list[list[int]], pad_id: int) -> MicroBatch:
    """One right-padded row `[q, o_1, ..., o_k]` per unit (positions into `seqs` sharing one prompt).

    Sequences come out in unit order. Each row carries its prompt's vision tensors once. Response
    token t of o_i is predicted by the logit at the previous packed token: the prompt's last token
    for t = 0 (shared by the row's responses), o_i's token t - 1 otherwise; `logits_to_keep` is
    the union of those positions over the rows.
    """
    if not units or any(not unit for unit in units):
        raise ValueError("collate_shared needs at least one non-empty unit")
    if any(not seqs[i].response_ids for unit in units for i in unit):
        raise ValueError("every sequence needs at least one response token")
    for unit in units:
        if any(seqs[i].prompt_ids != seqs[unit[0]].prompt_ids for i in unit):
            raise ValueError("a shared-prefix unit holds responses to different prompts")
    prompts = [seqs[unit[0]] for unit in units]
    widths = [len(p.prompt_ids) + sum(len(seqs[i].response_ids) for i in unit) for p, unit in zip(prompts, units)]
    twin_widths = [len(p.prompt_ids) + max(len(seqs[i].response_ids) for i in unit) for p, unit in zip(prompts, units)]
    batch, length, twin_length = len(units), max(widths), max(twin_widths)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    token_types = torch.zeros((batch, length), dtype=torch.long)
    segments = torch.full((batch, length), PAD, dtype=torch.long)
    rope_index = torch.zeros((batch, length), dtype=torch.long)
    rope_ids = torch.full((batch, twin_length), pad_id, dtype=torch.long)
    rope_types = torch.zeros((batch, twin_length), dtype=torch.long)
    rope_mask = torch.zeros((batch, twin_length), dtype=torch.long)
    vision: dict[str, list[Tensor]] = {}

    order = [i for unit in units for i in unit]
    max_response = max(len(seqs[i].response_ids) for i in order)
    logit_index = torch.zeros((len(order), max_response), dtype=torch.long)
    targets = torch.zeros((len(order), max_response), dtype=torch.long)
    mask = torch.zeros((len(order), max_response), dtype=torch.long)
    rows = torch.zeros(len(order), dtype=torch.long)
    predictors: list[Tensor] = []
    n = 0
    for row, (prompt, unit) in enumerate(zip(prompts, units)):
        p = len(prompt.prompt_ids)
        input_ids[row, :p] = torch.tensor(prompt.prompt_ids, dtype=torch.long)
        segments[row, :p] = PROMPT
        rope_index[row, :p] = torch.arange(p)
        if TOKEN_TYPE_KEY in prompt.hf_inputs:
            types = torch.as_tensor(prompt.hf_inputs[TOKEN_TYPE_KEY]).reshape(-1)
            token_types[row, : types.numel()] = types
            rope_types[row, : types.numel()] = types
        for key, value in prompt.hf_inputs.items():
            if key != TOKEN_TYPE_KEY:
                vision.setdefault(key, []).append(torch.as_tensor(value))
        longest = max(unit, key=lambda i: len(seqs[i].response_ids))
        twin = prompt.prompt_ids + seqs[longest].response_ids
        rope_ids[row, : len(twin)] = torch.tensor(twin, dtype=torch.long)
        rope_mask[row, : len(twin)] = 1

        start = p
        for k, i in enumerate(unit, start=1):
            response = seqs[i].response_ids
            r = len(response)
            input_ids[row, start : start + r] = torch.tensor(response, dtype=torch.long)
            segments[row, start : start + r] = k
            rope_index[row, start : start + r] = p + torch.arange(r)
            predictors.append(torch.cat([torch.tensor([p - 1]), start + torch.arange(r - 1)]))
            targets[n, :r] = torch.tensor(response, dtype=torch.long)
            mask[n, :r] = 1
            rows[n] = row
            start += r
            n += 1

    # Logits only at positions that predict a response token in some row (not over longer prompts).
    keep = torch.unique(torch.cat(predictors))
    for n, positions in enumerate(predictors):
        logit_index[n, : positions.numel()] = torch.searchsorted(keep, positions)
    model_inputs = {
        "input_ids": input_ids,
        "attention_mask": (segments != PAD).long(),
        TOKEN_TYPE_KEY: token_types,
        "logits_to_keep": keep,
        **{key: torch.cat(values, dim=0) for key, values in vision.items()},
    }
    advantages = torch.tensor([seqs[i].advantage for i in order], dtype=torch.float32)
    packing = Packing(segments, rope_ids, rope_types, rope_mask, rope_index)
    return MicroBatch(model_inputs, logit_index, targets, mask, advantages, rows, packing)


def group_units(groups: list[int], prompt_lengths: list[int], response_lengths: list[int], token_budget: int) -> list[list[int]]:
    """The sequences of each group (same prompt), split into sub-groups whose packed row fits `token_budget`.

    A sub-group's row is P + sum of its L_i; a group too large for one row splits greedily in its
    given order, each sub-group carrying the prompt once (a prompt longer than the budget gets one
    response per row, like a too-long row of the per-row path).
    """
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    units: list[list[int]] = []
    for group in members.values():
        unit, size = [], prompt_lengths[group[0]]
        for i in group:
            if unit and size + response_lengths[i] > token_budget:
                units.append(unit)
                unit, size = [], prompt_lengths[i]
            unit.append(i)
            size += response_lengths[i]
        units.append(unit)
    return units


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
    """(N, R) log-prob of each response token under logits / temperature (0 on padding)."""
    entropy: Optional[Tensor]
    """(N, R) entropy of the tempered distribution at each response token, detached (0 on padding)."""


def response_logprobs(model: torch.nn.Module, mb: MicroBatch, temperature: float = 1.0, with_entropy: bool = False,
                      suppressed: Collection[int] = ()) -> ResponseScores:
    """Forward `mb` through `model` (an HF Qwen-VL model or a DeepSpeed engine around one) and score the responses.

    Logits are divided by the sampling temperature before the log-softmax (method.md section 4).
    `suppressed` token ids (the vision placeholders, rl.family.suppressed_token_ids) are left out of
    the distribution, as the engines leave them out of the one they sample from and report, so
    learner and engine log-probs share one definition. A packed micro-batch (`collate_shared`) also
    gets its positions and prefix-sharing mask.
    """
    inputs = mb.model_inputs
    if mb.packing is not None:
        inputs = {**inputs, **shared_prefix_inputs(model, mb.packing, inputs)}
    logits = model(**inputs, use_cache=False).logits
    kept = logits.shape[1]
    logits = logits.reshape(-1, logits.shape[-1])[mb.row.unsqueeze(1) * kept + mb.logit_index].float() / temperature
    if suppressed:  # finite, so probability * logit stays 0 in the entropy
        ids = torch.tensor(list(suppressed), device=logits.device)
        logits = logits.index_fill(-1, ids, torch.finfo(logits.dtype).min)
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
