"""Process environment defaults shared by the driver, tests and every actor.

The device is configuration: this sets the environment each library reads (vLLM's CPU backend,
DeepSpeed's accelerator, offline hubs, wandb) so CPU and GPU runs share one code path. Values the
user already set are never overwritten.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Literal

Device = Literal["cpu", "cuda"]


def resolve_device(device: str = "auto") -> Device:
    """`cuda` when asked, or when `auto` and a CUDA device is visible; else `cpu`."""
    if device in ("cpu", "cuda"):
        return device  # type: ignore[return-value]
    if device != "auto":
        raise ValueError(f"cluster.device must be auto, cpu or cuda, got '{device}'")
    if shutil.which("nvidia-smi"):
        try:
            subprocess.run(["nvidia-smi", "-L"], check=True, capture_output=True, timeout=10)
            return "cuda"
        except (subprocess.SubprocessError, OSError):
            pass
    return "cpu"


def runtime_env_vars(device: Device, *, in_actor: bool = False, kvcache_gib: int = 1) -> dict[str, str]:
    """The environment a ThinkOnce process needs; `in_actor` adds what Ray worker processes need."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if not os.environ.get("WANDB_API_KEY"):
        env["WANDB_MODE"] = "offline"
    if device == "cpu":
        env.update(
            {
                "DS_ACCELERATOR": "cpu",
                "VLLM_TARGET_DEVICE": "cpu",
                "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                "VLLM_CPU_KVCACHE_SPACE": str(kvcache_gib),
            }
        )
        if in_actor:
            env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    return env


def configure_environment(device: Device, *, in_actor: bool = False, kvcache_gib: int = 1) -> None:
    """Apply `runtime_env_vars` to this process without overriding what the user set."""
    for key, value in runtime_env_vars(device, in_actor=in_actor, kvcache_gib=kvcache_gib).items():
        os.environ.setdefault(key, value)
