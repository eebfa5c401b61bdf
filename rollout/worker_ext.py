"""Methods vLLM adds to each of its workers (`worker_extension_cls`), called through `collective_rpc`.

Weight loading runs inside the worker because that is where the model lives: in-process on CPU,
in a separate worker process on GPU. Each worker also joins the weight-sync group
(learner.sync) once, then takes every sync's bucket stream straight into its model.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

from learner.params import ParamMeta
from learner.sync import SyncGroupSpec, WeightReceiver
from rl.runtime import quiet_repeated_warnings


# A GPU worker is its own process: it keeps vLLM's per-sync reload warnings to one each, too.
quiet_repeated_warnings()


class WorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker (it has `model_runner`, `device`)."""

    def thinkonce_load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load HF-named tensors into the running model; returns how many were given.

        The CPU backend repacks weights after loading, so `model.load_weights` would write into
        tensors it no longer reads: there the model runner's in-place reload is the way in.
        """
        named = list(named_tensors)
        self._thinkonce_apply(iter(named))
        return len(named)

    def _thinkonce_apply(self, named: Iterator[tuple[str, torch.Tensor]]) -> None:
        if self.device.type == "cpu":
            self.model_runner.reload_weights(weights_iterator=named, is_checkpoint_format=True)
        else:
            self.model_runner.get_model().load_weights(weights=named)

    def thinkonce_init_weight_sync(self, spec: SyncGroupSpec, rank_offset: int, metas: list[ParamMeta]) -> None:
        """Join the weight-sync group as rank `rank_offset + this worker's rank` (blocks until all joined)."""
        old = getattr(self, "_thinkonce_receiver", None)
        if old is not None:
            old.close()
        self._thinkonce_receiver = WeightReceiver(spec, rank_offset + self.rank, metas, self.device)

    def thinkonce_receive_weights(self) -> int:
        """Take one sync's buckets, loading each tensor as it arrives; returns how many tensors came."""
        received = 0

        def stream() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal received
            for item in self._thinkonce_receiver.receive():
                received += 1
                yield item

        named = stream()
        self._thinkonce_apply(named)
        for _ in named:  # the loader may stop early; the group's stream must still be drained
            pass
        return received
