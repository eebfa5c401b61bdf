"""The base layer, no actors: config, types, grammar, GRPO math, problem types, data, prompts, metrics, checkpoint format, weight-sync protocol."""
