"""Verifiable rewards: task rewards, the dual-answer composition, and the scoring pool."""
