"""`thinkonce filter`: the paper's difficulty filter (137K -> 83K prompts, method.md section 6).

Sample k answers per prompt with the engines (the rollout sampling of the config, temperature 1),
score each final answer (the last box) with the task reward, and drop QA prompts whose k answers
are all right or all wrong: they give GRPO zero-variance groups, hence no gradient. Grounding
prompts (iou, and gqa, whose segment is graded by IoU) are kept whole, as in the paper. Bad samples
(media that cannot be decoded, prompts that are too long) are dropped and counted. Writes the
filtered dataset (.jsonl or .parquet, by extension) and `<out>.stats.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from rl.config import ConfigError, load_config

KEPT_WHOLE = ("iou", "gqa")
log = logging.getLogger("thinkonce.filter")


def decide(problem_type: str, correct: list[bool]) -> str:
    """`kept`, `all_right` or `all_wrong` for one prompt's k graded answers."""
    if problem_type in KEPT_WHOLE:
        return "kept"
    if all(correct):
        return "all_right"
    if not any(correct):
        return "all_wrong"
    return "kept"


def filter_dataset(args: argparse.Namespace) -> int:
    """CLI entry; returns the exit code."""
    import ray

    from launch.infer import score_answer
    from launch.placement import init_ray
    from rl.data.files import write_jsonl, write_parquet
    from rl.data.loaders import load_dataset
    from rl.grammar import last_boxed
    from rl.inputs import InputBuilder, SampleError
    from rl.runtime import configure_environment, resolve_device
    from rl.warmstart import resolve_model_path
    from rollout.group import RolloutGroup
    from rollout.sampling import SamplingSettings

    if args.k < 2:
        raise ConfigError(f"--k must be at least 2, got {args.k} (all right / all wrong needs several answers)")
    cfg = load_config(args.config, list(args.overrides))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    device = resolve_device(cfg.cluster.device)
    configure_environment(device, kvcache_gib=cfg.rollout.cpu_kvcache_gib)
    model_dir = resolve_model_path(cfg.model, cfg.data, seed=cfg.trainer.seed)
    data = load_dataset(args.data, cfg.data.media_root)
    builder = InputBuilder(str(model_dir), cfg.data, training=True)  # the prompts the filtered data trains on
    init_ray(cfg, device)
    rollout = RolloutGroup.from_config(cfg, str(model_dir))
    sampling = dataclasses.replace(SamplingSettings.from_config(cfg.rollout), n=args.k, seed=cfg.trainer.seed)
    stats: dict[str, Any] = {"input": len(data.samples), "load_skipped": data.report.total, "by_type": defaultdict(Counter)}
    kept = []
    try:
        batch = max(1, cfg.trainer.prompts_per_round)
        for start in range(0, len(data.samples), batch):
            inputs = []
            for sample in data.samples[start : start + batch]:
                try:
                    inputs.append(builder.build(sample))
                except SampleError as exc:
                    stats["by_type"][sample.problem_type][exc.reason] += 1
                    log.warning("skipping %s", exc)
            for mi, gens in zip(inputs, rollout.generate(inputs, sampling) if inputs else []):
                sample = mi.sample
                correct = [score_answer(sample, last_boxed(g.text) or "")["correct"] for g in gens]
                verdict = decide(sample.problem_type, correct)
                stats["by_type"][sample.problem_type][verdict] += 1
                if verdict == "kept":
                    kept.append(sample)
    finally:
        rollout.shutdown()
        ray.shutdown()
    out = Path(args.out)
    (write_parquet if out.suffix == ".parquet" else write_jsonl)(kept, out, media_root=out.parent)
    stats.update(output=len(kept), k=args.k, by_type={t: dict(c) for t, c in stats["by_type"].items()})
    Path(f"{out}.stats.json").write_text(json.dumps(stats, indent=2))
    if not kept:
        log.warning("no prompt kept: %s is empty (per problem type: %s); every prompt's %d answers were all right "
                    "or all wrong, or its media failed. The model is too weak or too strong for this data at this "
                    "rollout.temperature", out, json.dumps(stats["by_type"]), args.k)
    print(json.dumps(stats))
    return 0
