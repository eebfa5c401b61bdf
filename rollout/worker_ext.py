"""Methods vLLM adds to each of its workers (`worker_extension_cls`), called through `collective_rpc`.

Weight loading runs inside the worker because that is where the model lives: in-process on CPU,
in a separate worker process on GPU. Each worker also joins the weight-sync group
(learner.sync) once, then takes every sync's bucket stream straight into its model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch
from safetensors import safe_open

from rl.runtime import quiet_repeated_warnings
from rl.weight_sync.broadcast import WeightReceiver
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec, mismatches

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
        if self.device.type != "cpu":
            self.model_runner.get_model().load_weights(weights=named)
            return
        try:
            self.model_runner.reload_weights(weights_iterator=named, is_checkpoint_format=True)
        except BaseException:
            # An interrupted layerwise reload leaves layers mid-load (on the meta device, loaders
            # wrapped); finishing it puts every layer back in a loadable state, so the retried sync
            # reloads cleanly. Until that retry the model mixes old and new weights.
            from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

            finalize_layerwise_reload(self.model_runner.get_model(), self.model_runner.model_config)
            raise

    def thinkonce_init_weight_sync(self, spec: SyncGroupSpec, rank_offset: int, metas: list[ParamMeta]) -> None:
        """Check the learner's parameter list against this model, then join the weight-sync group as rank
        `rank_offset + this worker's rank` (blocks until all joined, or the deadline)."""
        self._thinkonce_check(metas)
        old = getattr(self, "_thinkonce_receiver", None)
        if old is not None:
            old.close()
        self._thinkonce_receiver = WeightReceiver(spec, rank_offset + self.rank, metas, self.device)

    def _thinkonce_check(self, metas: list[ParamMeta]) -> None:
        """Fail the connect, listing the first mismatches, unless every tensor the learner will send fits.

        Names and shapes are checked against the checkpoint this engine was built from (the
        safetensors headers; no tensor is read), both sides named through the model's own
        HF-to-vLLM mapper, the one its loader applies; dtypes against the model's dtype. vLLM's
        fused parameters (qkv, gate-up) have no HF name, so its `named_parameters` cannot serve.
        """
        model_config = self.model_runner.model_config
        mapper = getattr(self.model_runner.get_model(), "hf_to_vllm_mapper", None)

        def rename(name: str) -> Optional[str]:
            mapped = mapper.apply_list([name]) if mapper is not None else [name]
            return mapped[0] if mapped else None

        known: dict[str, tuple[int, ...]] = {}
        for path in sorted(Path(model_config.model).glob("*.safetensors")):
            with safe_open(str(path), "pt") as fh:
                for key in fh.keys():
                    name = rename(key)
                    if name is not None:
                        known[name] = tuple(fh.get_slice(key).get_shape())
        if not known:
            raise ValueError(f"weight sync: no safetensors under {model_config.model} to check the learner's parameters against")
        bad = mismatches(metas, known, model_config.dtype, rename)
        if bad:
            raise ValueError(f"weight sync: the learner's {len(metas)} parameters do not fit the engine's model "
                             f"{model_config.model} ({len(bad)} mismatches); first: " + "; ".join(bad[:5]))

    def thinkonce_receive_weights(self) -> int:
        """Take one sync's buckets, loading each tensor as it arrives; returns how many tensors the loader took.

        Any failure (a broken wire, the deadline, the loader rejecting a tensor) abandons the sync on
        every member of the group, so the learner and the other engines stop at once.
        """
        receiver = self._thinkonce_receiver
        pulled = 0

        def stream() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal pulled
            for item in receiver.receive():
                pulled += 1
                yield item

        named = stream()
        try:
            self._thinkonce_apply(named)
            loaded = pulled
            leftover = sum(1 for _ in named)  # the group's stream must be drained to stay in step
        except BaseException as exc:
            receiver.abandon(f"engine worker {self.rank}: {type(exc).__name__}: {exc}")
            raise
        if leftover:
            raise RuntimeError(f"weight sync: the model loader stopped after {loaded} of {loaded + leftover} tensors")
        return loaded
