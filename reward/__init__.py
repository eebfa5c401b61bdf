"""Verifiable rewards: task rewards, the dual-answer composition, and the scoring pool.

Importing the package loads the scoring code only; `reward.pool` (Ray) is imported on demand.
"""

from reward.dual import score

__all__ = ["score"]
