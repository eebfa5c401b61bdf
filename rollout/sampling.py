"""What every engine is asked for (sampling settings) and the tokens no engine may sample.

A random or lightly trained model samples vision placeholder tokens (`<|video_pad|>`, ...), and a
response containing one breaks the learner's forward pass, which expects exactly the prompt's
placeholders: every engine removes these tokens from the sampling distribution.

The log-prob an engine reports for a sampled token is its log-prob under the distribution it was
sampled from: softmax(logits / temperature), top-p applied, vision placeholders removed. The
learner scores log_softmax(logits / temperature) over the same support, placeholders removed
(learner.batch.response_logprobs), so at top-p 1 (the paper's setting) the two agree at any
temperature; and with grpo.behaviour_logprobs = engine the truncated weight divides by the
probability the token really had. (Raw log-probs, before temperature, differ from the learner's by
tenths at temperature 0.7: tests/test_rollout.py.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class SamplingSettings:
    """One request's sampling: n samples per prompt; temperature 0 means greedy."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 2048
    seed: Optional[int] = None
    """Sample j of a prompt uses seed + j (vLLM's own rule for n > 1), so both fan-outs agree."""
    stop: tuple[str, ...] = ()
    """Stop strings: decoding ends at the token that completes one; that token is kept whole in
    `token_ids` (so prompt + tokens continue exactly), the text is cut right after the string."""

    @classmethod
    def from_config(cls, rollout) -> "SamplingSettings":
        """GRPO sampling as `rollout.*` (an rl.config.RolloutConfig) sets it."""
        return cls(n=rollout.n, temperature=rollout.temperature, top_p=rollout.top_p, max_new_tokens=rollout.max_new_tokens)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1, got n={self.n}, max_new_tokens={self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        if self.greedy and self.n > 1:
            raise ValueError("greedy decoding (temperature 0) with n > 1 would repeat one answer n times")


def response_text(tokenizer, token_ids: Sequence[int]) -> str:
    """The text of response tokens as engines report it (special tokens such as EOS dropped)."""
    return tokenizer.decode(list(token_ids), skip_special_tokens=True)
