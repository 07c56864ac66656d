#!/usr/bin/env bash
# The GPU check, one script (an H200 lent through the `device` tool; at most ~9 minutes there):
#   1. the 4-bit LLaMA-2-7B-shaped training bench: random init, bnb nf4 base, bf16 compute, seq 1024, batch 1,
#      LoRA / MPLoRA / MoR E8R8 / LoRATRF, step time and peak max_memory_allocated as ratios to LoRA;
#   2. the serving bench (plugin.bench --serve) on a random bf16 LLaMA-2-7B-shaped model (8 of its layers);
#   3. where the device's python imports vllm (its image: no wheel of that size travels), the same model served by
#      vLLM with MoR and LoRATRF exported for it (plugin.bench --serve --engine vllm). Tensor parallelism needs two
#      GPUs: a lent machine has one.
# Writes OUT/gpu_check.json and OUT/gpu_check.md (OUT: $1, else $OUT, else gpu_check_out).
# What the device image lacks travels as wheels in .wheels/ (bash scripts/gpu_prepare.sh fills it) and the
# tokenizer in .gpu_assets/. GPU_CHECK_TINY=1 runs the same steps with tiny shapes (tests/experiments, on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu_check_out}}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if compgen -G ".wheels/*.whl" > /dev/null; then "$PY" -m pip install -q --no-index --no-deps .wheels/*.whl; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
tokenizer=$([ -d .gpu_assets/tokenizer ] && echo .gpu_assets/tokenizer || echo embedded:smollm2-135m-instruct)
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
  train=(--hidden 64 --layers 1 --vocab 512 --seq 32 --warmup 1 --steps 2 --compute_dtype float32)
  serve=(--serve_random 64,1 --concurrency 1,2 --requests_per_client 1 --serve_tokens 4)
else
  train=(--hidden 4096 --layers "${LAYERS:-32}" --vocab 32000 --seq 1024 --warmup 2 --steps 5)
  serve=(--serve_random "4096,${SERVE_LAYERS:-8}" --concurrency 1,16,64 --requests_per_client 2 --serve_tokens 64)
fi
"$PY" -m plugin.bench --methods lora,mplora,mor,loratrf --load_in_4bit --batch 1 --rank 8 --experts 8 \
  --targets gate_proj,up_proj,down_proj "${train[@]}" --json "$OUT/train.json"
"$PY" -m plugin.bench --serve --serve_model "$tokenizer" "${serve[@]}" --json "$OUT/serve.json"
if "$PY" -c "import vllm" 2> /dev/null; then
  "$PY" -m plugin.bench --serve --engine vllm --serve_model "$tokenizer" "${serve[@]}" --json "$OUT/serve_vllm.json"
fi
"$PY" - "$OUT" <<'PY'
import json, platform, sys
from pathlib import Path

import torch

from plugin.experiments.benchmark import ratio_table
from plugin.experiments.serve_bench import serve_table

out = Path(sys.argv[1])
train, serve = (json.loads((out / f"{name}.json").read_text()) for name in ("train", "serve"))
if (out / "serve_vllm.json").is_file():
    serve += json.loads((out / "serve_vllm.json").read_text())
for row in serve:
    row.pop("texts", None)
device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})"
(out / "gpu_check.json").write_text(json.dumps({"device": device, "torch": torch.__version__, "train": train,
                                                 "serve": serve}, indent=1))
(out / "gpu_check.md").write_text(f"# GPU check on {device}\n\n## Training (4-bit base)\n\n"
                                  f"{ratio_table([{'round': 0, **r} for r in train], False)}\n\n"
                                  f"## Serving\n\n{serve_table(serve)}\n")
print((out / "gpu_check.md").read_text())
PY
