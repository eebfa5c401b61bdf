"""Verifiable rewards: the dual-answer composition over the problem types' task rewards
(rl.problems), the scoring pool, and the benchmarks' official scoring.

Importing the package loads the scoring code only; `reward.pool` (Ray) is imported on demand.
"""

from reward.dual import score

__all__ = ["score"]
