"""CPU-box import hook: lets the CUDA-built torchvision wheel import on CPU-only torch.

torchvision 0.28's wheel is built against CUDA torch; on the CPU torch build its import fails with
"operator torchvision::nms does not exist" because its compiled ops library does not load. The
Qwen video/image processors need torchvision, so before torchvision is first imported we define
the schemas of the two ops its Python side registers fake kernels for. Installed only on CPU boxes
(scripts/install.sh) as a .pth file, so it reaches Ray and vLLM worker processes too. It is lazy:
nothing is imported at interpreter start-up.
"""

import importlib.abc
import sys

_LIBRARY = None


class _TorchvisionOpsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            _define_ops()
        return None


def _define_ops() -> None:
    global _LIBRARY
    import torch

    missing = [name for name in ("nms", "qnms") if not _has_schema(name)]
    if not missing:
        return
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _LIBRARY.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _has_schema(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


sys.meta_path.insert(0, _TorchvisionOpsFinder())
