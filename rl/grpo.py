"""GRPO as VideoAuto-R1 trains it (method.md section 4): group advantages and the clipped loss.

Symbols follow the paper. For a prompt q the policy samples a group of G responses o_1..o_G with
rewards r_1..r_G; each token t of response o_i gets

    A_i        = (r_i - mean(r)) / (std(r) + eps)           std unbiased; A_i = 0 if std(r) = 0
    rho_{i,t}  = exp(logp_{i,t} - logp_old_{i,t})            importance ratio
    L^clip     = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i)
    KL_{i,t}   = exp(ref_{i,t} - logp_{i,t}) - (ref_{i,t} - logp_{i,t}) - 1        (k3 estimator)
    l_{i,t}    = L^clip + beta KL_{i,t}

When rounds overlap (trainer.off_policy_steps = 1) a sample comes from pi_behav, the policy one
version before pi_old (the learner's policy when the round's updates start). The loss is then the
decoupled objective (AReaL; Hilton et al. 2022): the importance ratio's denominator is pi_behav,
factored as pi_theta / pi_behav = rho * (pi_old / pi_behav); the clip acts on rho (the trust region
around the policy being updated) and the behaviour factor is a truncated importance weight

    w_{i,t}    = min(exp(logp_old_{i,t} - logp_behav_{i,t}), C)     detached, C = behaviour_weight_cap
    L^clip     = -w_{i,t} min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i)

With grpo.behaviour_logprobs = engine, logp_behav are the engines' own log-probs and w also
corrects the engine/learner numerical gap (verl's truncated importance sampling). In the
synchronous case with learner log-probs pi_behav = pi_old, w is not applied, and the loss is the
one above, bit for bit.

and the batch loss aggregates l over the response tokens ("seq-mean-token-mean": the mean over
each response's tokens, then the mean over responses, as the paper; "token-mean": one mean over
all tokens of the batch). Pure torch, no model code: the learner feeds it log-probs.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional

import torch
from torch import Tensor

Aggregation = Literal["seq-mean-token-mean", "token-mean"]
AGGREGATIONS: tuple[str, ...] = ("seq-mean-token-mean", "token-mean")


class GroupAdvantages(NamedTuple):
    advantages: Tensor
    """A_i per response, shape (N,), in the order of the rewards."""
    zero_variance_fraction: float
    """Share of groups whose rewards are all equal: they carry no learning signal (A = 0)."""


def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-4) -> GroupAdvantages:
    """A_i = (r_i - mean_group) / (std_group + eps), std unbiased, for consecutive groups of `group_size`.

    A group whose rewards are all equal gets A = 0 exactly (not the rounding noise of r - mean).
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for an unbiased std, got {group_size}")
    r = torch.as_tensor(rewards, dtype=torch.float64).flatten()
    if r.numel() % group_size:
        raise ValueError(f"{r.numel()} rewards do not split into groups of {group_size}")
    groups = r.view(-1, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, unbiased=True, keepdim=True)
    constant = groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)
    advantages = torch.where(constant, torch.zeros_like(groups), (groups - mean) / (std + eps))
    return GroupAdvantages(advantages.flatten().to(torch.float32), constant.float().mean().item())


def masked_mean(values: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """Mean of `values` where `mask` is 1 (over `dim`, or over everything)."""
    on = mask > 0
    kept = torch.where(on, values, torch.zeros_like(values))
    count = on.to(values.dtype)
    if dim is None:
        return kept.sum() / count.sum().clamp(min=1)
    return kept.sum(dim) / count.sum(dim).clamp(min=1)


def aggregate(per_token: Tensor, mask: Tensor, aggregation: Aggregation) -> Tensor:
    """Reduce (B, T) per-token values to the batch loss with the chosen aggregation."""
    if aggregation == "seq-mean-token-mean":
        return masked_mean(per_token, mask, dim=1).mean()
    if aggregation == "token-mean":
        return masked_mean(per_token, mask)
    raise ValueError(f"unknown aggregation '{aggregation}', expected one of {AGGREGATIONS}")


def aggregation_units(mask: Tensor, aggregation: Aggregation) -> int:
    """How many units `aggregate` averages over: sequences or tokens.

    A batch split into micro-batches reproduces the whole batch's loss when each micro-batch's
    loss is weighted by its units over the batch's units.
    """
    if aggregation == "seq-mean-token-mean":
        return int(mask.shape[0])
    if aggregation == "token-mean":
        return int(mask.sum().item())
    raise ValueError(f"unknown aggregation '{aggregation}', expected one of {AGGREGATIONS}")


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """KL(pi || pi_ref) per token, k3 estimator: exp(ref - logp) - (ref - logp) - 1 >= 0."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def behaviour_weights(old_logp: Tensor, behaviour_logp: Tensor, cap: float) -> Tensor:
    """w = min(exp(logp_old - logp_behav), C): the truncated importance weight of pi_old over pi_behav."""
    return torch.exp(old_logp - behaviour_logp).clamp(max=cap).detach()


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Optional[Tensor],
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    kl_coef: float = 0.01,
    aggregation: Aggregation = "seq-mean-token-mean",
    behaviour_weight: Optional[Tensor] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The GRPO loss of a batch and its statistics.

    logp, old_logp, ref_logp, mask: (B, T) over response tokens (mask 1 on real tokens);
    advantages: (B,). Per token

        l = -min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A) + kl_coef * KL_k3(logp, ref_logp)

    aggregated per `aggregation`. kl_coef = 0 drops the KL term (ref_logp may then be None).
    `behaviour_weight` (B, T), from `behaviour_weights`, multiplies the clipped term (off-policy rounds).
    Stats are detached: pg_loss and kl aggregated like the loss (loss = pg_loss + kl_coef kl);
    clip fractions, ratio and KL means over the batch's tokens. The clip is binding on the low side
    where A < 0 and rho < 1 - clip_low, on the high side where A > 0 and rho > 1 + clip_high.
    """
    mask = mask.to(logp.dtype)
    a = advantages.to(logp.dtype).unsqueeze(-1)
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * a
    pg_per_token = -torch.minimum(unclipped, clipped)
    if behaviour_weight is not None:
        pg_per_token = pg_per_token * behaviour_weight.to(logp.dtype)
    pg_loss = aggregate(pg_per_token, mask, aggregation)

    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs ref_logp")
        kl_per_token = k3_kl(logp, ref_logp)
        kl = aggregate(kl_per_token, mask, aggregation)
        loss = pg_loss + kl_coef * kl
    else:
        kl_per_token = None
        kl = torch.zeros((), dtype=logp.dtype, device=logp.device)
        loss = pg_loss

    with torch.no_grad():
        on = mask > 0
        clip_low_hit = (ratio < 1 - clip_low) & (a < 0) & on
        clip_high_hit = (ratio > 1 + clip_high) & (a > 0) & on
        real_ratio = ratio[on] if on.any() else torch.ones(1, dtype=ratio.dtype, device=ratio.device)
        stats = {
            "pg_loss": pg_loss.detach(),
            "kl": kl.detach(),
            "kl_token_mean": masked_mean(kl_per_token, mask) if kl_per_token is not None else kl.detach(),
            "clip_frac_low": masked_mean(clip_low_hit.to(logp.dtype), mask),
            "clip_frac_high": masked_mean(clip_high_hit.to(logp.dtype), mask),
            "clip_frac": masked_mean((clip_low_hit | clip_high_hit).to(logp.dtype), mask),
            "ratio_mean": masked_mean(ratio, mask),
            "ratio_min": real_ratio.min(),
            "ratio_max": real_ratio.max(),
        }
    return loss, stats
