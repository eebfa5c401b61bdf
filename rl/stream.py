"""The training prompt stream: shuffled epochs over a dataset, resumable from a sample count.

The position is one integer, `samples_consumed`, so a run resumes at the right sample whatever the
learner world size was. Epoch e visits the dataset in the order of a permutation seeded by
(seed, e), so the order after a resume is the order the uninterrupted run would have taken; a
resume exactly at an epoch boundary (consumed = k * N) starts epoch k at its first sample.
"""

from __future__ import annotations

from typing import Generic, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


class PromptStream(Generic[T]):
    """Yields items in seeded per-epoch order; `take(k)` advances `samples_consumed` by k."""

    def __init__(self, items: Sequence[T], *, seed: int = 0, shuffle: bool = True, samples_consumed: int = 0) -> None:
        if not items:
            raise ValueError("the training dataset is empty: nothing to train on")
        self.items = items
        self.seed = seed
        self.shuffle = shuffle
        self.samples_consumed = samples_consumed
        self._orders: dict[int, np.ndarray] = {}

    @property
    def epoch(self) -> int:
        """The epoch the next item comes from."""
        return self.samples_consumed // len(self.items)

    def order(self, epoch: int) -> np.ndarray:
        """Dataset indices in the order epoch `epoch` visits them."""
        if epoch not in self._orders:
            n = len(self.items)
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)}
        return self._orders[epoch]

    def take(self, k: int) -> list[T]:
        """The next k items (crossing epoch boundaries as needed)."""
        out = []
        for _ in range(k):
            n = len(self.items)
            epoch, offset = divmod(self.samples_consumed, n)
            out.append(self.items[int(self.order(epoch)[offset])])
            self.samples_consumed += 1
        return out
