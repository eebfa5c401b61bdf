"""`thinkonce infer`: confidence-gated early-exit inference over a dataset, with benchmark metrics.

Writes one prediction per sample (JSONL) and prints one summary JSON: accuracy overall and per
problem type, mIoU and R@0.3/0.5/0.7 for grounding, answer accuracy and mIoU for grounded QA, the
think ratio, mean generated tokens, and wall seconds. Data comes through rl.data's loaders (the
release's data_config.yaml, an internal .jsonl/.parquet, `synthetic` or `miniature_release`), media
through the same input builder training uses, with the evaluation system prompt (rl.prompts).

A sample is correct when its task reward is > 0.5 (exact_match, math: reward 0/1; iou: IoU > 0.5,
i.e. R@0.5); for grounded QA, when the answer part (before `<>`) matches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from rl.config import Config, ModelConfig, load_config
from rl.problems import problem
from rl.problems.grounding import IOU_THRESHOLDS
from rl.types import Sample
from rollout.early_exit import EarlyExitDecoder, EarlyExitResult, Mode, default_tau

THINK_RATIO_NOTE = ("think_ratio: the share of answers taken after the thinking (a2); post-hoc decodes every response "
                    "to the end and then answers from a1 when it is confident, so its tokens include the thinking "
                    "even at think_ratio 0")

def score_answer(sample: Sample, answer: str) -> dict[str, Any]:
    """Reward, correctness and (grounding) IoU of one final answer, as its problem type scores it."""
    return problem(sample.problem_type).score(answer, sample.answer)


def _metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from reward.benchmarks import latency

    n = len(rows)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": sum(r["correct"] for r in rows) / n if n else 0.0,
        "think_ratio": sum(r["thought"] for r in rows) / n if n else 0.0,
        "mean_generated_tokens": sum(r["generated_tokens"] for r in rows) / n if n else 0.0,
    }
    out.update(latency(rows))
    ious = [r["iou"] for r in rows if "iou" in r]
    if ious:
        out["miou"] = sum(ious) / len(ious)
        for t in IOU_THRESHOLDS:
            out[f"r@{t}"] = sum(iou >= t for iou in ious) / len(ious)
    return out


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-problem-type metrics of prediction rows."""
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_type[r["problem_type"]].append(r)
    overall = _metrics(rows)
    return {
        "overall": overall,
        "per_problem_type": {k: _metrics(v) for k, v in sorted(by_type.items())},
        "think_ratio": overall["think_ratio"],
        "mean_generated_tokens": overall["mean_generated_tokens"],
        "latency_p50_s": overall["latency_p50_s"],
        "latency_p95_s": overall["latency_p95_s"],
    }


def prediction_row(sample: Sample, result: EarlyExitResult) -> dict[str, Any]:
    row = {
        "id": sample.id,
        "problem_type": sample.problem_type,
        "a1": result.a1,
        "confidence": result.confidence,
        "thought": result.thought,
        "answer": result.answer,
        "generated_tokens": result.generated_tokens,
        "latency_s": result.latency_s,
        "text": result.text,
    }
    row.update(score_answer(sample, result.answer))
    return row


def resolve_model_dir(model: str, cfg: Config) -> Path:
    """An HF model directory, or `tiny:<family>` built (and warm-started as configured) on demand."""
    from rl.warmstart import resolve_model_path

    return resolve_model_path(ModelConfig(**{**cfg.model.model_dump(), "path": model}), cfg.data)


def run_inference(
    cfg: Config,
    model: str,
    data: str,
    *,
    mode: Optional[Mode] = None,
    tau: Optional[float] = None,
    out: Optional[str] = None,
    engine: Any = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Decode every usable sample of `data` in `mode`; write predictions to `out`; return the summary.

    `engine` reuses an already built engine (tests, benchmarks); by default one is built from
    `rollout.backend` and the model. Samples whose media cannot be used are skipped and counted.
    `progress`: a bar (or log lines) over the samples once the engine is up.
    """
    import logging

    from rl.data.loaders import load_dataset, load_from_config
    from rl.data.records import DataError
    from rl.family import model_family
    from rl.inputs import InputBuilder, SampleError
    from rl.metrics import progress_bar
    from rollout.backends import build_engine
    from rollout.engine import EngineSpec

    started = time.perf_counter()
    model_dir = resolve_model_dir(model, cfg)
    mode = mode or cfg.infer.mode
    tau = tau or cfg.infer.tau or default_tau(model_family(model_dir))
    if data in ("synthetic", "miniature_release"):
        dataset = load_from_config(cfg.data.model_copy(update={"train": data}))
    else:
        dataset = load_dataset(data, cfg.data.media_root)
    if not len(dataset):
        raise DataError(f"no usable samples in {data} ({dataset.report.summary()})")
    builder = InputBuilder(str(model_dir), cfg.data, training=False)
    if engine is None:
        logging.getLogger("thinkonce.infer").info("%d samples; starting the %s engine on %s (vLLM loads and "
                                                  "compiles first)", len(dataset), cfg.rollout.backend, model_dir)
        spec = EngineSpec.from_config(cfg, str(model_dir))
        engine = build_engine(spec.replace(max_model_len=cfg.data.max_prompt_length + cfg.infer.max_new_tokens))
    decoder = EarlyExitDecoder(engine, tau=tau, max_new_tokens=cfg.infer.max_new_tokens)
    skipped: dict[str, int] = defaultdict(int)
    for reason, count in dataset.report.counts.items():
        skipped[reason] += count
    rows: list[dict[str, Any]] = []
    samples = list(dataset)
    bar = progress_bar(len(samples), desc="infer", unit="sample", enabled=progress)
    for start in range(0, len(samples), batch_size):
        inputs = []
        for sample in samples[start : start + batch_size]:
            try:
                inputs.append(builder.build(sample))
            except SampleError as exc:
                skipped[exc.reason] += 1
        for mi, result in zip(inputs, decoder.decode(inputs, mode)):
            rows.append(prediction_row(mi.sample, result))
        bar.update(len(samples[start : start + batch_size]))
    bar.close()
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"model": str(model_dir), "data": data, "mode": mode, "tau": tau, "skipped": dict(skipped)}
    summary.update(summarize(rows))
    if mode == "post-hoc":
        summary["note"] = THINK_RATIO_NOTE
    summary["wall_s"] = time.perf_counter() - started
    return summary


def infer(cfg_or_args: Union[argparse.Namespace, Config]) -> int:
    """CLI entry: parsed `thinkonce infer` arguments, or a Config (model.path on data.train)."""
    import logging

    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries the summary JSON only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if isinstance(cfg_or_args, Config):
        cfg = cfg_or_args
        summary = run_inference(cfg, cfg.model.path, cfg.data.train)
    else:
        args = cfg_or_args
        cfg = load_config(args.config, getattr(args, "overrides", None) or ())
        if not args.out:
            print("thinkonce infer: no --out, so the predictions are not kept; only the summary is printed",
                  file=sys.stderr)
        summary = run_inference(cfg, args.model, args.data, mode=args.mode, tau=args.tau, out=args.out,
                                progress=cfg.logging.progress)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0
