"""Generation: vLLM / transformers engines, their actor group, and confidence-gated early-exit inference."""
