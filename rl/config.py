"""The one configuration tree of ThinkOnce, with the paper's names and defaults.

Defaults are the VideoAuto-R1 recipe (method.md): G=16 samples per prompt, rewards
0.9/1.1/1.0/0.3, clip 0.2, beta (kl_coef) 0.01, lr 1e-6, 128 prompts x 16 per round consumed in 8
optimizer steps, 2 fps / 4..256 frames / 4096 video tokens. Presets live in `configs/*.yaml`;
dotted overrides (`trainer.total_steps=20`) are applied on top.

Libraries: OmegaConf merges YAML files and dotted command-line overrides (it parses `20` as an
int, `[1,2]` as a list, `null` as None); pydantic checks the merged tree against the typed schema
below and its errors name the key and the bad value (`trainer.total_steps: Input should be greater
than 0 ... input_value=-1`). Unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PositiveInt = Field(gt=0)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelConfig(_Section):
    """The policy: an HF model directory, or `tiny:<family>` for the offline tiny model.

    `tiny:qwen2_5_vl` / `tiny:qwen3_vl` build (once, cached under `artifacts/`) a random tiny model,
    warm-started for `tiny_warm_start_steps` supervised steps on the output format only (the
    answers in its targets are random, so any accuracy it gains comes from RL).
    """

    path: str = "tiny:qwen2_5_vl"
    tiny_warm_start_steps: int = Field(default=0, ge=0)
    family: Literal["auto", "qwen2_5_vl", "qwen3_vl"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"


class DataConfig(_Section):
    """Where samples come from and how video is sampled (method.md section 5 and 6)."""

    train: str = "synthetic"
    """The release's `data_config.yaml`, a `.jsonl`/`.parquet` in the internal schema, `synthetic`, or
    `miniature_release` (a small generated release folder, loaded like a real one; docs/data.md)."""
    media_root: Optional[str] = None
    """Where relative paths resolve. For a data_config.yaml: its `anno_path`/`data_path` values (the
    release writes `data/...`, relative to the folder the job runs in, the default). For a .jsonl or
    .parquet: the media paths (default: the file's folder)."""
    synthetic_num_samples: int = Field(default=64, gt=0)
    synthetic_dir: str = "artifacts/synthetic"
    synthetic_kinds: list[Literal["choice", "count", "ground", "grounded_qa", "colour"]] = ["choice", "count", "ground", "grounded_qa"]
    """Task families of `train: synthetic`, cycled (rl.data.synthetic.KINDS); the demo trains on `colour` only."""
    synthetic_shuffle_options: bool = True
    """Shuffle multiple-choice options per sample (TVBench-like); off, the letter names the colour/shape."""
    miniature_release_dir: str = "artifacts/miniature_release"
    """Where `train: miniature_release` builds its folder (once; rl.data.miniature_release)."""
    fps: float = Field(default=2.0, gt=0)
    min_frames: int = Field(default=4, gt=0)
    max_frames: int = Field(default=256, gt=0)
    min_pixels_tokens: int = Field(default=16, gt=0)
    """Per-frame minimum, in units of (2*patch)^2 pixels: 16 * f^2."""
    max_pixels_tokens: int = Field(default=768, gt=0)
    """Per-frame maximum, in units of f^2: 768 * f^2."""
    total_pixels_tokens: int = Field(default=4096, gt=0)
    """Video budget, in units of f^2: 4096 * f^2, about 4096 video tokens."""
    frame_resize: Literal["uint8", "float"] = "uint8"
    """The bicubic antialiased frame resize: "uint8", torch's uint8 kernel (15x faster; values within
    a level or two of qwen-vl-utils'), or "float", qwen-vl-utils' float32 resize bit for bit
    (rl.data.video.resize_frames, docs/data.md)."""
    max_prompt_length: int = Field(default=8192, gt=0)
    video_cache_size: int = Field(default=64, ge=0)
    system_prompt: Optional[str] = None
    """None: the official system prompt (rl.prompts; training without, inference with a trailing
    newline). Otherwise the training text, or a .txt/.md file holding it."""
    prompts: Optional[str] = None
    """A YAML file overriding user-turn templates (answer_suffix, grounding, grounded_qa); rl.prompts."""
    shuffle: bool = True
    seed: int = 0
    num_builders: Optional[int] = Field(default=None, ge=0)
    """Input-builder actors that decode media and render prompts in parallel (launch.builders).
    None: as many as the cluster's free CPUs allow once engines, learner and reward workers are
    placed (at least one when any CPU is free); 0: build in the driver, one prompt after another."""
    builder_cpus: float = Field(default=1.0, gt=0)
    """Ray CPUs per input-builder actor."""
    prefetch_rounds: int = Field(default=1, ge=0)
    """Rounds whose prompts are built ahead, while the current round trains (with builder actors)."""

    @model_validator(mode="after")
    def _frames(self) -> "DataConfig":
        if self.min_frames > self.max_frames:
            raise ValueError(f"data.min_frames ({self.min_frames}) > data.max_frames ({self.max_frames})")
        return self


class RolloutConfig(_Section):
    """vLLM engines that sample the G responses per prompt."""

    backend: Literal["vllm", "hf"] = "vllm"
    num_engines: int = Field(default=1, gt=0)
    tensor_parallel_size: int = Field(default=1, gt=0)
    n: int = Field(default=16, gt=0)
    """G, samples per prompt."""
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(default=2048, gt=0)
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    cpu_kvcache_gib: int = Field(default=1, gt=0)
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    """vLLM's `enforce_eager`: no torch.compile, no CUDA graphs. Off for real models (CUDA graphs speed
    decoding); on in the tiny CPU configs, where compiling a 2-layer model costs ~24 s of an
    engine's ~28 s start (measured) and buys nothing."""
    max_restarts: int = Field(default=3, ge=0)


class RewardConfig(_Section):
    """R = w1 R(a1) + w2 R(a2) + lambda_fmt R_fmt + alpha R_fallback (method.md section 3)."""

    w1: float = 0.9
    w2: float = 1.1
    lambda_fmt: float = 1.0
    alpha: float = 0.3
    fallback_threshold: float = 0.7
    """R_fallback = 1 when a1 is the fallback string and R_task(a2) > this."""
    num_workers: int = Field(default=2, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    """Hard wall-clock limit per sample; a sample past it scores 0 and is counted."""


class GRPOConfig(_Section):
    """Advantages and the clipped policy loss (method.md section 4)."""

    eps: float = Field(default=1e-4, gt=0)
    clip_low: float = Field(default=0.2, ge=0)
    clip_high: float = Field(default=0.2, ge=0)
    kl_coef: float = Field(default=0.01, ge=0)
    """beta; 0 drops the reference model."""
    aggregation: Literal["seq-mean-token-mean", "token-mean"] = "seq-mean-token-mean"
    behaviour_logprobs: Literal["learner", "engine"] = "learner"
    """Where pi_behav, the policy that generated a sample, comes from (rl.grpo.policy_loss):
    `learner` recomputes it (a frozen snapshot of the previous version when rounds overlap; the
    synchronous case needs none and is unchanged); `engine` takes the engines' own log-probs."""
    behaviour_weight_cap: float = Field(default=2.0, gt=0)
    """C in w = min(pi_old / pi_behav, C), the truncated importance weight on the behaviour gap."""


class LearnerConfig(_Section):
    """The DeepSpeed world that runs the GRPO updates."""

    world_size: int = Field(default=1, gt=0)
    zero_stage: Literal[0, 1, 2, 3] = 3
    lr: float = Field(default=1e-6, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    gradient_checkpointing: bool = True
    micro_batch_tokens: int = Field(default=16384, gt=0)
    """Token budget of one forward/backward micro-batch."""
    shared_prefix: bool = True
    """Each prompt (and its video) computed once per group: responses packed after one prompt copy (learner.prefix); false = one row per response."""
    freeze_vision: bool = True
    """The vision encoder is frozen; the merger and the language model train."""
    minibatch: Literal["grouped", "shuffled"] = "grouped"
    """How a round's samples make up its optimizer steps. `grouped`: step k trains on whole prompt
    groups in order (verl's convention; each step shares a prompt's prefix across its G responses).
    `shuffled`: the official make-up, the round's samples shuffled across the steps (seeded by
    trainer.seed and the round); old/ref log-probs are still computed over whole groups first."""


class SyncConfig(_Section):
    """Learner rank 0 -> engines weight broadcast."""

    bucket_mb: float = Field(default=256.0, gt=0)
    timeout_s: float = Field(default=300.0, gt=0)


class TrainerConfig(_Section):
    """The GRPO schedule: one round = prompts_per_round x G completions, in steps_per_round updates."""

    prompts_per_round: int = Field(default=128, gt=0)
    steps_per_round: int = Field(default=8, gt=0)
    """Optimizer steps per round (paper: 2048 completions as 8 steps of 256)."""
    total_rounds: Optional[int] = Field(default=None, gt=0)
    """None: one epoch over the data (the paper)."""
    epochs: int = Field(default=1, gt=0)
    seed: int = 0
    run_dir: str = "runs/default"
    save_every: int = Field(default=50, gt=0)
    """Rounds between checkpoints (also on SIGTERM)."""
    keep_last: int = Field(default=3, gt=0)
    off_policy_steps: Literal[0, 1] = 0
    """0: the synchronous round. 1: the engines generate round t+1 (from policy version t-1) while
    the learner trains on round t; samples are at most one version stale."""


class InferConfig(_Section):
    """Confidence-gated early exit (method.md section 7)."""

    mode: Literal["auto", "always-think", "never-think", "post-hoc"] = "auto"
    tau: Optional[float] = Field(default=None, gt=0, le=1)
    """None: 0.97 for Qwen2.5-VL, 0.98 for Qwen3-VL."""
    max_new_tokens: int = Field(default=4096, gt=0)


class EvalConfig(_Section):
    """How `thinkonce eval` scores (reward.benchmarks, docs/eval.md)."""

    profile: Literal["paper", "corrected"] = "paper"
    """paper: the VideoAuto-R1 evaluation item for item (its confidence rule, text choice, extraction,
    IoU and aggregation, defects kept); corrected: each defect fixed (docs/eval.md lists them)."""


class LoggingConfig(_Section):
    wandb_project: str = "thinkonce"
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto: online when WANDB_API_KEY is set, offline otherwise (an unreachable server blocks ~100 s)."""
    progress: bool = True
    engine_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    """vLLM's log level in the engines: INFO adds its start-up lines and its periodic throughput
    (per-step stats) logger, WARNING (default) keeps a run's log to our own lines and real warnings."""


class ClusterConfig(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    ray_address: Optional[str] = None
    """None: join the cluster of RAY_ADDRESS / `ray job submit`, or start a local one."""
    rollout_resources: dict[str, float] = {}
    """Extra Ray resources each engine actor asks for, to pin engines to a kind of node
    (e.g. {"rollout_node": 1} with `ray start --resources '{"rollout_node": 8}'`)."""
    learner_resources: dict[str, float] = {}
    """Extra Ray resources each learner rank's bundle asks for (pins the learner world likewise)."""


class Config(_Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    grpo: GRPOConfig = GRPOConfig()
    learner: LearnerConfig = LearnerConfig()
    sync: SyncConfig = SyncConfig()
    trainer: TrainerConfig = TrainerConfig()
    infer: InferConfig = InferConfig()
    eval: EvalConfig = EvalConfig()
    logging: LoggingConfig = LoggingConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _schedule(self) -> "Config":
        completions = self.trainer.prompts_per_round * self.rollout.n
        if completions % self.trainer.steps_per_round:
            raise ValueError(
                f"trainer.steps_per_round ({self.trainer.steps_per_round}) must divide "
                f"trainer.prompts_per_round x rollout.n ({completions})"
            )
        return self


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names key and value."""


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML preset at `path` <- dotted `key=value` overrides, validated."""
    layers: list[Any] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as exc:  # yaml errors come in several types
            raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. trainer.total_rounds=20)")
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.to_container(OmegaConf.merge(*layers), resolve=True) if layers else {}
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad override: {exc}") from exc
    if not isinstance(merged, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown config key '{key}' (value {value!r})")
        else:
            lines.append(f"config key '{key}': {err['msg']} (got {value!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def to_yaml(cfg: Config) -> str:
    """The fully resolved config, as written into run directories and checkpoints."""
    return OmegaConf.to_yaml(OmegaConf.create(cfg.model_dump(mode="json")))


RESUME_NEUTRAL_KEYS: tuple[str, ...] = (
    # where things live (the dataset's content is checked by its fingerprint, rl.checkpoint)
    "data.train", "data.media_root", "data.synthetic_dir", "data.video_cache_size",
    # who builds the prompts and how far ahead: the stream's order is kept exactly (launch.builders)
    "data.num_builders", "data.builder_cpus", "data.prefetch_rounds",
    "trainer.run_dir", "trainer.save_every", "trainer.keep_last",
    # how long the run goes: the data order of epoch e depends on (trainer.seed, e) only
    "trainer.total_rounds", "trainer.epochs",
    # the cluster's shape: per-prompt sampling seeds do not depend on which engine or rank runs it
    "rollout.num_engines", "rollout.tensor_parallel_size", "rollout.gpu_memory_utilization",
    "rollout.cpu_kvcache_gib", "rollout.enable_prefix_caching", "rollout.enforce_eager", "rollout.max_restarts",
    "reward.num_workers", "learner.world_size", "learner.zero_stage", "learner.gradient_checkpointing",
    "learner.micro_batch_tokens", "cluster.ray_address",
    # transport, evaluation and reporting
    "sync.", "infer.", "eval.", "logging.",
)
"""Keys a resumed run may change freely (a trailing dot: the whole section). Every other key alters
the run's math or its data order, and resuming with it changed is refused unless the user names it
(`--resume-allow-changes`). Listing the harmless keys, not the harmful ones, keeps a key added later
guarded until someone decides it is harmless."""


def flat_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dump as {dotted key: value}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_changes(saved: dict[str, Any], running: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, running value) for every key outside RESUME_NEUTRAL_KEYS that differs.

    Both are `Config.model_dump(mode="json")` trees. A key only one side has (the code gained or
    lost it between the runs) is not a change of the user's.
    """
    old, new = flat_keys(saved), flat_keys(running)
    neutral = lambda key: any(key == n or (n.endswith(".") and key.startswith(n)) for n in RESUME_NEUTRAL_KEYS)  # noqa: E731
    return [(key, old[key], new[key]) for key in sorted(old.keys() & new.keys()) if old[key] != new[key] and not neutral(key)]
