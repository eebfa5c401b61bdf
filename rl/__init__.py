"""Everything independent of any actor: config, response grammar, prompts, data, GRPO math, the trainer loop."""
