"""Write the folder vLLM serves an adapter from (``format.py``): the base's files, config.json naming the adapted
architecture and carrying the adapter's config, the adapter's tensors beside, and a model card saying how to serve
it. Runs in the training environment (no vLLM import). Whatever the served model could not reproduce exactly is
refused before anything is written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ...inference.export import written_aside
from ...inference.runs import AdapterRun, resolve_run
from ...models.adapter_io import read_adapter_config, read_adapter_weights
from ...models.loader import resolve_model_path
from ...tuners.base import principal_init
from ...utils.errors import UserError
from .format import ADAPTER_FILE, BASES, CONFIG_KEY, PROJECTIONS, architecture, method_names, tensor_prefix

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")
INDEX = "model.safetensors.index.json"
CARD = "README.md"


def check_servable(run: AdapterRun, adapter: dict, tensor_names) -> None:
    """A UserError naming the way out for an adapter the served model would not reproduce exactly."""
    peft_type = adapter["peft_type"]
    if peft_type == "LORA":
        raise UserError(f"{run.folder} is a PEFT LoRA adapter: vLLM serves LoRA itself (python -m "
                        "vllm.entrypoints.openai.api_server --model BASE --enable-lora --lora-modules NAME=DIR); "
                        "--vllm is for MoR, LoRATRF and MPLoRA (or write MPLoRA with --as-lora for vLLM's LoRA)")
    if peft_type not in method_names():
        raise UserError(f"{run.folder}: peft_type {peft_type} is not one of this package's methods "
                        f"({', '.join(method_names())})")
    if adapter.get("target_parameters"):
        raise UserError(f"{run.folder}: target_parameters ({adapter['target_parameters']}) adapts raw MoE expert "
                        "tensors, which vLLM's fused expert kernels give no place to: export with --merge instead")
    if adapter.get("modules_to_save"):
        raise UserError(f"{run.folder}: modules_to_save ({adapter['modules_to_save']}) trains whole modules, which "
                        "this export does not carry: it cannot be served with vLLM")
    if principal_init(adapter.get("init_weights", True)):
        raise UserError(f"{run.folder}: init_weights={adapter['init_weights']!r} trained on a residual base (W minus "
                        "its principal part), not the base's own weights: it cannot be served over the base with "
                        "vLLM")
    prefix = tensor_prefix(peft_type)
    adapted = {name.split(f".{prefix}", 1)[0].rpartition(".")[2] for name in tensor_names}
    if adapted - set(PROJECTIONS):
        raise UserError(f"{run.folder} adapts {sorted(adapted - set(PROJECTIONS))}; vLLM serves adapters on "
                        f"{', '.join(PROJECTIONS)} only")


def write_folder(run_or_adapter: str | Path, out: str | Path, base: str | None = None,
                 overwrite: bool = False) -> Path:
    """The vLLM folder of a ``plugin.train`` run or adapter folder (its base from the run, or ``base``)."""
    run = resolve_run(run_or_adapter, base)
    adapter = read_adapter_config(run.folder)
    check_servable(run, adapter, read_adapter_weights(run.folder))  # complete, finite, servable: before writing
    base_dir = Path(resolve_model_path(run.base_model))
    if not (base_dir / "config.json").is_file():
        raise UserError(f"base model {run.base_model}: no local folder with a config.json; download it (hf download "
                        f"{run.base_model} --local-dir DIR) and pass --base DIR")
    config = json.loads((base_dir / "config.json").read_text())
    bases = config.get("architectures") or []
    if len(bases) != 1 or bases[0] not in BASES:
        raise UserError(f"base model {run.base_model} is {', '.join(bases) or 'of no named architecture'}; vLLM "
                        f"serves these adapters over {', '.join(BASES)}")
    if run.load_in_4bit:
        print("note: the adapter was trained on a 4-bit base; vLLM serves it over the full-precision base (the "
              "outputs differ from the 4-bit ones by the quantisation error)", file=sys.stderr)
    arch = architecture(adapter["peft_type"], bases[0])
    out = Path(out)
    with written_aside(out, overwrite) as staging:
        _copy_base(run, base_dir, staging)
        shutil.copy2(run.folder / "adapter_model.safetensors", staging / ADAPTER_FILE)
        if (staging / INDEX).is_file():  # vLLM reads only the files a sharded base's index names
            from safetensors import safe_open

            index = json.loads((staging / INDEX).read_text())
            with safe_open(str(staging / ADAPTER_FILE), "pt") as adapter_file:
                index["weight_map"].update({key: ADAPTER_FILE for key in adapter_file.keys()})
            (staging / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        config["architectures"] = [arch]
        config[CONFIG_KEY] = adapter
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (staging / CARD).write_text(_card(run, arch, out))
    return out


def _copy_base(run: AdapterRun, base_dir: Path, staging: Path) -> None:
    """The base's files but its config and card; the run's tokenizer (its chat template) over the base's."""
    ours = run.folder if (run.folder / "tokenizer_config.json").is_file() else base_dir
    for path in sorted(base_dir.iterdir()):
        if path.is_file() and path.name not in ("config.json", CARD) and not (
                path.name in TOKENIZER_FILES and ours != base_dir):
            shutil.copy2(path, staging / path.name)
    for name in TOKENIZER_FILES if ours != base_dir else ():
        if (ours / name).is_file():
            shutil.copy2(ours / name, staging / name)


def _card(run: AdapterRun, arch: str, out: Path) -> str:
    method = method_names()[run.peft_type]
    return f"""---
base_model: {run.base_model}
library_name: vllm
tags: [{method.lower()}, vllm]
---
# {out.name}: a {method} adapter with its base, for vLLM

{run.base_model} with the {method} adapter of `{run.folder}`, as one model of architecture `{arch}`: the base's
files, `{ADAPTER_FILE}` (the adapter's tensors, under PEFT's names) and config.json's `{CONFIG_KEY}` (the adapter's
PEFT config). vLLM knows the architecture only with this package installed beside it (its `vllm.general_plugins`
entry point registers it; `bash scripts/setup_vllm.sh` makes such an environment, `.venv-vllm`).

Serve it with OpenAI's API (on a CPU, also set `VLLM_CPU_KVCACHE_SPACE=1` (GiB) and, on 4 cores or fewer,
`VLLM_CPU_OMP_THREADS_BIND=nobind` and `MKL_NUM_THREADS` to the number of cores (left unset, MKL slows the adapter's
small matmuls); `--dtype float32` for float32 weights, which vLLM otherwise serves in 16 bits):

```bash
python -m vllm.entrypoints.openai.api_server --model {out} --served-model-name {out.name} --port 8000
```

or offline: `vllm.LLM("{out}").generate(...)`. `python -m plugin.serve {run.folder} --engine vllm` exports and
serves in one step. `--tensor-parallel-size N` works (every rank holds the whole adapter); plain transformers does
not load `{arch}`: load the adapter itself with PEFT and `import plugin`.
"""
