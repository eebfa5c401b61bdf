"""Methods vLLM adds to each of its workers (`worker_extension_cls`), called through `collective_rpc`.

Weight loading runs inside the worker because that is where the model lives: in-process on CPU,
in a separate worker process on GPU. Process-group weight receiving will grow here too.
"""

from __future__ import annotations

from typing import Iterable

import torch


class WorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker (it has `model_runner`, `device`)."""

    def thinkonce_load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load HF-named tensors into the running model; returns how many were given.

        The CPU backend repacks weights after loading, so `model.load_weights` would write into
        tensors it no longer reads: there the model runner's in-place reload is the way in.
        """
        named = list(named_tensors)
        if self.device.type == "cpu":
            self.model_runner.reload_weights(weights_iterator=iter(named), is_checkpoint_format=True)
        else:
            self.model_runner.get_model().load_weights(weights=iter(named))
        return len(named)
