#!/usr/bin/env bash
# Fill what scripts/gpu_check.sh needs on the device machine and its image lacks (no registry is reachable there):
# wheels for its Python 3.12 in .wheels/ (bitsandbytes, FastAPI/uvicorn and their pieces) and the embedded model's
# tokenizer in .gpu_assets/. Both folders are git-ignored; name them in the device run's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .wheels .gpu_assets
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .wheels \
  "bitsandbytes==0.50.2" fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection
.venv/bin/python -c "
from transformers import AutoTokenizer
from plugin.models.embedded import embedded_model_path
AutoTokenizer.from_pretrained(embedded_model_path()).save_pretrained('.gpu_assets/tokenizer')"
du -sh .wheels .gpu_assets
