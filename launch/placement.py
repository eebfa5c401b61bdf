"""Joining or starting Ray, and checking up front that the cluster has what the config asks for.

Engines, learner ranks and reward workers are placed by their groups (separate placement groups,
so rollout and learner GPU counts scale independently); this module only makes sure the cluster
can hold them all, and says clearly what is missing before any actor starts.
"""

from __future__ import annotations

import logging
import os

from rl.config import Config, ConfigError
from rl.runtime import Device, quiet_repeated_warnings, runtime_env_vars

log = logging.getLogger("thinkonce.placement")


class ResourceShortfall(ConfigError, RuntimeError):
    """The cluster cannot hold what the config asks for: a user error, reported in one line."""


def required(cfg: Config, device: Device) -> dict[str, float]:
    """Logical resources the run needs: one CPU per actor; GPUs for engines (num_engines x TP) and learner ranks."""
    need = {"CPU": float(cfg.rollout.num_engines + cfg.learner.world_size + cfg.reward.num_workers)}
    need["CPU"] += (cfg.data.num_builders or 0) * cfg.data.builder_cpus
    if device == "cuda":
        need["GPU"] = float(cfg.rollout.num_engines * cfg.rollout.tensor_parallel_size + cfg.learner.world_size)
    for per_actor, count in ((cfg.cluster.rollout_resources, cfg.rollout.num_engines), (cfg.cluster.learner_resources, cfg.learner.world_size)):
        for name, amount in per_actor.items():
            need[name] = need.get(name, 0.0) + amount * count
    return need


def init_ray(cfg: Config, device: Device) -> None:
    """Join `cluster.ray_address` / RAY_ADDRESS (set under `ray job submit`), or start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    quiet_repeated_warnings()  # Ray's own notices too, in every driver (eval's does not configure_environment)
    address = cfg.cluster.ray_address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": runtime_env_vars(device, in_actor=True, kvcache_gib=cfg.rollout.cpu_kvcache_gib)}
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Ray's CPUs are logical: on a small CPU box every actor still gets its slot and the OS shares the cores.
        cores = os.cpu_count() or 1
        warning = oversubscribed(cfg, device, cores)
        if warning:
            log.warning(warning)
        cpus = max(cores, int(required(cfg, device)["CPU"]) + 1)
        # address="local": a new instance even when another Ray runs on this machine (left by a killed
        # run, or another job's): ray.init() would otherwise join the most recent one it finds.
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, runtime_env=env, log_to_driver=True)


def oversubscribed(cfg: Config, device: Device, cores: int) -> str:
    """A warning when a local CPU run asks for more engines than the machine has cores ('' if not):
    each engine is a full vLLM instance, so they share the cores and start and decode slower."""
    if device != "cpu" or cfg.rollout.num_engines <= cores:
        return ""
    return (f"rollout.num_engines={cfg.rollout.num_engines} on {cores} CPU cores: the engines share the cores, so "
            f"start-up and decoding get slower, not faster; on this machine use rollout.num_engines<={cores}")


def check_resources(cfg: Config, device: Device) -> None:
    """Fail early, naming the config keys, when the cluster cannot hold the run (every shortfall at once)."""
    import ray

    have = ray.cluster_resources()
    why = {
        "GPU": (f"rollout.num_engines ({cfg.rollout.num_engines}) x rollout.tensor_parallel_size "
                f"({cfg.rollout.tensor_parallel_size}) + learner.world_size ({cfg.learner.world_size})"),
        "CPU": (f"one per actor: rollout.num_engines ({cfg.rollout.num_engines}) + learner.world_size "
                f"({cfg.learner.world_size}) + reward.num_workers ({cfg.reward.num_workers}) + data.num_builders "
                f"({cfg.data.num_builders or 0}) x data.builder_cpus ({cfg.data.builder_cpus:g})"),
    }
    short = [f"{have.get(resource, 0.0):g} {resource} but the config needs {amount:g}: "
             f"{why.get(resource, 'cluster.rollout_resources / cluster.learner_resources x their actor counts')}"
             for resource, amount in sorted(required(cfg, device).items(), reverse=True)
             if have.get(resource, 0.0) + 1e-9 < amount]
    if short:
        raise ResourceShortfall("the Ray cluster has " + "; and ".join(short) + ". Lower those keys or add nodes.")
