# The two commands of the README. Each does all set-up on a fresh machine (creates .venv).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
# The install skips pip's byte-compilation of the whole stack (scripts/install.sh): Python writes
# the bytecode of what the product imports on first use, so it must be allowed to.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test install bench
demo: install
	$(PY) -m launch.cli demo

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

install: $(VENV)/.thinkonce-installed

$(VENV)/.thinkonce-installed: pyproject.toml scripts/install.sh scripts/thinkonce_cpu_compat.py
	VENV=$(VENV) bash scripts/install.sh

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
