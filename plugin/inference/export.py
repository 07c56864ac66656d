"""Exports of a trained adapter that need no ``import plugin`` to load:

- a merged full model (MPLoRA and LoRA: W + s B A exactly), which plain transformers loads;
- an MPLoRA adapter rewritten as a PEFT LoRA adapter: MPLoRA's forward is LoRA's (its paths only shape the
  training loss), so ``peft_type: LORA`` with the same A and B gives the same logits, and every tool that takes
  LoRA adapters (vLLM / SGLang multi-LoRA, TGI, llama.cpp's converter) takes it.

MoR and LoRATRF are refused: their update depends on each token (the router, the gate), so it is no weight delta.
Outputs are written beside the destination and moved into place; an existing non-empty folder is never written
into unless ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..models.adapter_io import read_adapter_config, read_adapter_weights
from ..utils.errors import UserError
from .runs import AdapterRun, load_run

MERGEABLE = ("MPLORA", "LORA")
NOT_A_DELTA = ("{method}'s update depends on each token ({why}), so it is no weight delta: it cannot be merged or "
               "written as LoRA; use it through plugin.chat (or plugin.eval), which load it with import plugin")
WHY = {"MOR": "the router weighs the experts per token", "LORATRF": "the task-relevant gate is computed per token"}


def _refuse_token_dependent(run: AdapterRun) -> None:
    if run.peft_type not in MERGEABLE:
        raise UserError(NOT_A_DELTA.format(method=run.peft_type, why=WHY.get(run.peft_type, "it is not B A")))


@contextmanager
def written_aside(out: Path, overwrite: bool):
    """A fresh folder beside ``out`` to write into; moved to ``out`` only when the block finishes."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out} exists and is not empty; pass --overwrite to replace it, or another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def merge(run: AdapterRun, out: Path, overwrite: bool = False) -> Path:
    """The base with the adapter merged in, saved with its tokenizer (chat template) as a plain transformers model."""
    _refuse_token_dependent(run)
    if run.load_in_4bit:
        print("note: the adapter was trained on a 4-bit base; it is merged into the full-precision base (the "
              "dequantised weights differ from the 4-bit ones by the quantisation error)", file=sys.stderr)
    full = dataclasses.replace(run, load_in_4bit=False)
    with written_aside(out, overwrite) as staging:
        model, tokenizer = load_run(full, need_chat_template=False)
        merged = model.merge_and_unload(safe_merge=True)
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return out


def as_lora(run: AdapterRun, out: Path, overwrite: bool = False) -> Path:
    """An MPLoRA adapter as a PEFT LoRA adapter (same A, B, scalings, patterns and targets; expert tensors'
    factors are stored in LoRA's layout)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    if run.peft_type != "MPLORA":
        if run.peft_type == "LORA":
            raise UserError(f"{run.folder} is already a LoRA adapter")
        _refuse_token_dependent(run)
    config = read_adapter_config(run.folder)
    state = read_adapter_weights(run.folder)
    lora = LoraConfig(r=config["r"], lora_alpha=config["lora_alpha"], target_modules=config["target_modules"],
                      use_rslora=config.get("use_rslora", False), modules_to_save=config.get("modules_to_save"),
                      fan_in_fan_out=config.get("fan_in_fan_out", False), task_type=config.get("task_type"),
                      rank_pattern=config.get("rank_pattern") or {}, alpha_pattern=config.get("alpha_pattern") or {},
                      target_parameters=config.get("target_parameters"),
                      base_model_name_or_path=run.base_model, init_lora_weights=True)
    renamed = {key.replace(".mplora_A.", ".lora_A.").replace(".mplora_B.", ".lora_B."): tensor
               for key, tensor in state.items()}
    with written_aside(out, overwrite) as staging:
        lora.save_pretrained(staging)
        save_file(renamed, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            if (run.folder / name).is_file():
                shutil.copy2(run.folder / name, staging / name)
    return out
