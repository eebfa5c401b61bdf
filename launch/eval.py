"""`thinkonce eval`: early-exit evaluation over `rollout.num_engines` engine actors, resumable,
scored as the published benchmark numbers are, with the accuracy / length trade-off over tau.

    out/predictions.jsonl   one row per sample, appended batch by batch (a rerun skips done ids)
    out/eval_config.json    what the predictions were made with (a rerun must match it)
    out/summary.json        overall and per-group figures (reward.benchmarks.aggregate)
    out/tau_sweep.json/png  with --tau-sweep: accuracy, think ratio and tokens for every tau

Samples go to the engines in fixed batches of `--batch-size`, each batch to the next idle engine;
an engine decodes its whole batch (both early-exit stages, so stage 2 reads stage 1's prefix cache
on the same engine). Greedy decoding and fixed batches make the predictions independent of the
number of engines and of interruptions.

`--tau-sweep` decodes each sample once to the end (rollout.early_exit: `post-hoc`) and derives
what `auto` gives at every tau (`auto_at`); the summary is `auto` at the configured tau.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from rl.config import Config, load_config
from rl.data.benchmarks import Benchmark
from rl.types import Sample
from rollout.early_exit import EarlyExitResult, Mode, auto_at, default_tau, final_answer

logger = logging.getLogger("thinkonce.eval")

PAPER_TAUS = (0.97, 0.98)
"""The paper's operating points (Qwen2.5-VL, Qwen3-VL), marked on the plot."""
DEFAULT_SWEEP = tuple(round(0.05 * k, 2) for k in range(1, 19)) + tuple(round(0.9 + 0.01 * k, 2) for k in range(1, 11))
"""0.05 .. 0.90 by 0.05, then 0.91 .. 1.00 by 0.01, where the paper's operating points sit."""
MATCHED_KEYS = ("model", "data", "benchmark", "mode", "tau", "max_new_tokens", "tau_sweep", "system_prompt", "profile")


class EvalError(ValueError):
    """Bad eval input (paths, no usable samples, an output folder of another run): one clear line."""


class DecoderActor:
    """Ray shell over one engine and its EarlyExitDecoder: decodes whole batches, both stages."""

    def __init__(self, spec: Any, tau: float, max_new_tokens: int, rule: str = "span") -> None:
        from rl.runtime import configure_environment
        from rollout.backends import build_engine
        from rollout.early_exit import EarlyExitDecoder

        configure_environment(spec.device, in_actor=True, kvcache_gib=spec.cpu_kvcache_gib)
        self.decoder = EarlyExitDecoder(build_engine(spec), tau=tau, max_new_tokens=max_new_tokens, rule=rule)  # type: ignore[arg-type]

    def ready(self) -> int:
        return os.getpid()

    def decode(self, inputs: list, mode: str) -> list[EarlyExitResult]:
        return self.decoder.decode(inputs, mode)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Rows: one prediction, scored


def confidence_rule(profile: str) -> str:
    """The early-exit confidence rule a scoring profile decodes with: the official one under `paper`."""
    return "paper" if profile == "paper" else "span"


def _score(bench: Benchmark, sample: Sample, text: str, on_a1: bool, answer: str, profile: str) -> dict[str, Any]:
    """Benchmark scoring of the text the official wrapper hands on (before `<think>` when a1 is the
    answer, else after `</think>`), or, for internal data, the task reward of the answer (as `infer`)."""
    if bench.truths:
        from reward.benchmarks import score, scored_text

        return score(bench.truths[sample.id], scored_text(text, on_a1), profile)  # type: ignore[arg-type]
    from launch.infer import score_answer

    return score_answer(sample, answer)


def _group(bench: Benchmark, sample: Sample) -> str:
    return bench.truths[sample.id]["group"] if bench.truths else sample.problem_type


def prediction_row(bench: Benchmark, sample: Sample, result: EarlyExitResult, *, sweep: bool, tau: float,
                   max_new_tokens: int, profile: str = "paper") -> dict[str, Any]:
    """One sample's prediction and scores. With `sweep`, `result` is a full decode and the row keeps
    what every tau needs (a1 and the full answer, each scored; `think_at`) besides `auto` at `tau`."""
    row: dict[str, Any] = {"id": sample.id, "group": _group(bench, sample), "problem_type": sample.problem_type,
                           "a1": result.a1, "confidence": result.confidence, "latency_s": result.latency_s}
    if not sweep:
        row.update(thought=result.thought, answer=result.answer, generated_tokens=result.generated_tokens,
                   text=result.text)
        row.update(_score(bench, sample, result.text, not result.thought, result.answer, profile))
        return row
    full_answer = final_answer(result.text)
    row.update(think_at=result.think_at, full_tokens=result.generated_tokens, full_answer=full_answer, text=result.text,
               rule=confidence_rule(profile), score_a1=_score(bench, sample, result.text, True, result.a1, profile),
               score_full=_score(bench, sample, result.text, False, full_answer, profile))
    row.update(at_tau(row, tau, max_new_tokens))
    return row


def at_tau(row: dict[str, Any], tau: float, max_new_tokens: int) -> dict[str, Any]:
    """The fields `auto` at `tau` gives this one-pass row: answer, thought, generated_tokens, scores."""
    answer, thought, tokens = auto_at(row["a1"], row["confidence"], row["think_at"], row["full_tokens"],
                                      row["full_answer"], tau, max_new_tokens, row.get("rule", "span"))
    on_a1 = row["think_at"] is not None and not thought
    return {"answer": answer, "thought": thought, "generated_tokens": tokens,
            **(row["score_a1"] if on_a1 else row["score_full"])}


# ---------------------------------------------------------------------------------------------
# The output folder: resumable predictions


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Rows written so far; a last line cut by a kill is dropped (and cut from the file)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        logger.warning("%s: dropping an incomplete last line (the previous run was interrupted mid-write)", path)
        with open(path, "r+b") as fh:
            fh.truncate(len(complete))
    rows = []
    for number, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise EvalError(f"{path}:{number} is not valid JSON ({exc}); move the file away to start over") from None
    return rows


def prepare_out(out: Path, settings: dict[str, Any], overwrite: bool) -> list[dict[str, Any]]:
    """The predictions already made with these settings (resume), after checking the folder is ours."""
    meta_path = out / "eval_config.json"
    if out.exists() and overwrite:
        from rl.metrics import move_aside

        logger.warning("--overwrite: moved the earlier results to %s", move_aside(out))
    if meta_path.is_file():
        before = json.loads(meta_path.read_text())
        changed = [k for k in MATCHED_KEYS if before.get(k) != settings.get(k)]
        if changed:
            diff = ", ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise EvalError(f"{out} holds predictions made with other settings ({diff}); "
                            "use another --out, or --overwrite to move them aside")
    elif (out / "predictions.jsonl").exists():
        raise EvalError(f"{out}/predictions.jsonl has no eval_config.json beside it; use another --out or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(settings, indent=1) + "\n")
    return read_predictions(out / "predictions.jsonl")


# ---------------------------------------------------------------------------------------------
# Decoding over N engines


def _load(cfg: Config, data: str, benchmark: str, media_root: Optional[str]) -> Benchmark:
    from rl.data.benchmarks import load_benchmark
    from rl.data.loaders import load_from_config

    if data == "synthetic":
        return Benchmark("internal", load_from_config(cfg.data))
    if not Path(data).exists():
        raise EvalError(f"data not found: {data}")
    return load_benchmark(data, benchmark, media_root or cfg.data.media_root)


def _decode_all(cfg: Config, model_dir: Path, bench: Benchmark, todo: list[Sample], *, mode: Mode, tau: float,
                batch_size: int, on_rows, skipped: dict[str, int], progress: bool) -> int:
    """Decode `todo` in fixed batches over the engine actors; `on_rows(rows)` per finished batch."""
    import ray

    from launch.placement import init_ray
    from rl.inputs import InputBuilder, SampleError
    from rl.metrics import progress_bar
    from rl.runtime import resolve_device
    from rollout.actor import actor_options
    from rollout.engine import EngineSpec

    max_new = cfg.infer.max_new_tokens
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    device = resolve_device(cfg.cluster.device)
    init_ray(cfg, device)
    spec = EngineSpec.from_config(cfg, str(model_dir)).replace(max_model_len=cfg.data.max_prompt_length + max_new)
    builder = InputBuilder(str(model_dir), cfg.data, training=False)  # the evaluation prompt variant
    num_engines = min(cfg.rollout.num_engines, len(batches))
    actor_cls = ray.remote(DecoderActor).options(**actor_options(spec))
    actors = [actor_cls.remote(spec, tau, max_new, confidence_rule(cfg.eval.profile)) for _ in range(num_engines)]
    decoded = 0
    bar = None
    try:
        logger.info("starting %d engine(s) on %s", num_engines, model_dir)
        ray.get([a.ready.remote() for a in actors])
        bar = progress_bar(len(bench), initial=len(bench) - len(todo), desc="eval", unit="sample", enabled=progress)
        pending: dict[Any, tuple[Any, list]] = {}
        queue = list(reversed(batches))

        def submit(actor: Any) -> None:
            while queue:
                inputs = []
                for sample in queue.pop():
                    try:
                        mi = builder.build(sample)
                    except SampleError as exc:
                        skipped[exc.reason] += 1
                        bar.update(1)
                        continue
                    inputs.append(dataclasses.replace(mi, hf_inputs={}) if spec.backend == "vllm" else mi)
                if inputs:
                    pending[actor.decode.remote(inputs, mode)] = (actor, inputs)
                    return

        for actor in actors:
            submit(actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor, inputs = pending.pop(ready[0])
            results = ray.get(ready[0])
            on_rows([(mi.sample, r) for mi, r in zip(inputs, results)])
            decoded += len(results)
            bar.update(len(results))
            submit(actor)
    finally:
        if bar is not None:
            bar.close()
        for actor in actors:
            ray.kill(actor, no_restart=True)
    return decoded


# ---------------------------------------------------------------------------------------------
# Reports


def summarize(rows: Sequence[dict[str, Any]], benchmark: str) -> dict[str, Any]:
    """Overall and per-group figures, the benchmark's published figures aggregated as published
    (`headline`: MVBench weighted by task size, VideoMME per duration, R@m and mIoU), and per-sample
    latency p50/p95. `accuracy` is the headline's where it has one."""
    from reward.benchmarks import aggregate, headline

    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    out: dict[str, Any] = {"overall": aggregate(rows)}
    if len(by_group) > 1 or benchmark == "mvbench":
        out["per_group"] = {g: aggregate(v) for g, v in sorted(by_group.items())}
    published = headline(rows, benchmark)
    if published:
        out["headline"] = published
    for key in ("accuracy", "think_ratio", "mean_generated_tokens", "tokens_per_correct", "latency_p50_s",
                "latency_p95_s"):
        out[key] = out["overall"][key]
    if "accuracy" in published:
        out["accuracy"] = published["accuracy"]
    return out


def tau_curve(rows: Sequence[dict[str, Any]], taus: Sequence[float], max_new_tokens: int,
              benchmark: str = "internal") -> list[dict[str, Any]]:
    """Per tau: what `auto` would have scored (accuracy, think ratio, tokens, the rest of aggregate,
    and the benchmark's published figures; accuracy is the headline's where it has one)."""
    from reward.benchmarks import aggregate, headline

    curve = []
    for tau in taus:
        at = [{**r, **at_tau(r, tau, max_new_tokens)} for r in rows]
        point: dict[str, Any] = {"tau": tau, **aggregate(at)}
        published = headline(at, benchmark)
        if published:
            point["headline"] = published
            point["accuracy"] = published.get("accuracy", point["accuracy"])
        curve.append(point)
    return curve


def plot_curve(curve: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Accuracy and mean generated tokens against tau, the paper's operating points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = [p["tau"] for p in curve]
    fig, acc_ax = plt.subplots(figsize=(7, 4), dpi=120)
    tok_ax = acc_ax.twinx()
    acc_ax.plot(taus, [p["accuracy"] for p in curve], "o-", color="tab:blue", markersize=3, label="accuracy")
    acc_ax.plot(taus, [p["think_ratio"] for p in curve], ":", color="tab:green", label="think ratio")
    tok_ax.plot(taus, [p["mean_generated_tokens"] for p in curve], "s-", color="tab:orange", markersize=3,
                label="mean generated tokens")
    for tau in PAPER_TAUS:
        acc_ax.axvline(tau, color="grey", linestyle="--", linewidth=0.8)
        acc_ax.annotate(f"τ={tau}", (tau, 1.0), textcoords="offset points", xytext=(-28 if tau < 0.975 else 2, -12),
                        fontsize=7, color="grey")
    acc_ax.set_xlabel("confidence threshold τ (exit on a1 when confidence ≥ τ)")
    acc_ax.set_ylabel("accuracy / think ratio")
    acc_ax.set_ylim(-0.02, 1.05)
    tok_ax.set_ylabel("mean generated tokens")
    tok_ax.set_ylim(bottom=0)
    lines = acc_ax.get_lines()[:2] + tok_ax.get_lines()
    acc_ax.legend(lines, [line.get_label() for line in lines], loc="lower left", fontsize=8)
    acc_ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Entry points


def run_eval(cfg: Config, model: str, data: str, out: Union[str, Path], *, benchmark: str = "auto",
             media_root: Optional[str] = None, mode: Optional[Mode] = None, tau: Optional[float] = None,
             tau_sweep: bool = False, taus: Sequence[float] = DEFAULT_SWEEP, batch_size: int = 8,
             overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Evaluate `model` on `data` into `out`; returns the summary (also written to out/summary.json)."""
    from launch.infer import resolve_model_dir
    from rl.family import model_family

    started = time.perf_counter()
    if batch_size < 1:
        raise EvalError(f"--batch-size must be >= 1, got {batch_size}")
    if not model.startswith("tiny:") and not Path(model).is_dir():
        raise EvalError(f"model directory not found: {model}")
    mode = mode or cfg.infer.mode
    if tau_sweep and mode != "auto":
        raise EvalError(f"--tau-sweep derives `auto` at every tau from one full decode; it cannot run with --mode {mode}")
    bench = _load(cfg, data, benchmark, media_root)
    if not len(bench):
        raise EvalError(f"no usable samples in {data} ({bench.dataset.report.summary()})")
    model_dir = resolve_model_dir(model, cfg)
    tau = tau or cfg.infer.tau or default_tau(model_family(model_dir))
    max_new = cfg.infer.max_new_tokens
    out = Path(out)
    profile = cfg.eval.profile
    settings = {"model": str(model_dir), "data": str(data), "benchmark": bench.name, "mode": mode, "tau": tau,
                "max_new_tokens": max_new, "tau_sweep": tau_sweep, "system_prompt": cfg.data.system_prompt,
                "profile": profile}
    done = {r["id"]: r for r in prepare_out(out, settings, overwrite)}
    samples = {s.id: s for s in bench.dataset}
    todo = [s for s in bench.dataset if s.id not in done]
    logger.info("%s: %d samples (%d done before, %d to decode) -> %s", bench.name, len(samples), len(samples) - len(todo),
                len(todo), out)
    skipped: dict[str, int] = defaultdict(int)
    for reason, count in bench.dataset.report.counts.items():
        skipped[reason] += count
    pred_path = out / "predictions.jsonl"

    def on_rows(pairs: list[tuple[Sample, EarlyExitResult]]) -> None:
        rows = [prediction_row(bench, s, r, sweep=tau_sweep, tau=tau, max_new_tokens=max_new, profile=profile)
                for s, r in pairs]
        with open(pred_path, "a") as fh:
            fh.write("".join(json.dumps(row) + "\n" for row in rows))
            fh.flush()
            os.fsync(fh.fileno())
        done.update((row["id"], row) for row in rows)

    decoded = 0
    if todo:
        decoded = _decode_all(cfg, model_dir, bench, todo, mode="post-hoc" if tau_sweep else mode, tau=tau,
                              batch_size=batch_size, on_rows=on_rows, skipped=skipped, progress=progress)
    rows = [done[i] for i in samples if i in done]
    summary: dict[str, Any] = {"model": str(model_dir), "data": str(data), "benchmark": bench.name,
                               "mode": "auto (one full decode)" if tau_sweep else mode, "tau": tau, "profile": profile,
                               "decoded": decoded, "resumed": len(rows) - decoded, "skipped": dict(skipped)}
    summary.update(summarize(rows, bench.name))
    if tau_sweep:
        curve = tau_curve(rows, sorted(set(taus) | {tau}), max_new, bench.name)
        (out / "tau_sweep.json").write_text(json.dumps(curve, indent=1) + "\n")
        plot_curve(curve, out / "tau_sweep.png", f"{bench.name}: {Path(str(model_dir)).name}, {len(rows)} samples, one pass")
        summary["tau_sweep"] = {"table": str(out / "tau_sweep.json"), "plot": str(out / "tau_sweep.png")}
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def evaluate(args: argparse.Namespace) -> int:
    """CLI entry: parsed `thinkonce eval` arguments; prints the summary JSON on stdout."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries the summary JSON only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load_config(args.config, args.overrides or ())
    try:
        taus = DEFAULT_SWEEP if not args.taus else tuple(float(t) for t in args.taus.split(","))
    except ValueError:
        raise EvalError(f"--taus must be comma-separated numbers, got {args.taus!r}") from None
    if any(not 0 < t <= 1 for t in taus):
        raise EvalError(f"--taus must lie in (0, 1], got {args.taus}")
    summary = run_eval(cfg, args.model, args.data, args.out, benchmark=args.benchmark, media_root=args.media_root,
                       mode=args.mode, tau=args.tau, tau_sweep=args.tau_sweep, taus=taus, batch_size=args.batch_size,
                       overwrite=args.overwrite, progress=cfg.logging.progress)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0
