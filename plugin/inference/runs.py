"""What to load for a ``plugin.train`` output folder or any adapter folder: the base model, 4-bit or not, and the
tokenizer the adapter was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config.schema import RESOLVED_CONFIG_FILE
from ..models.adapter_io import load_model_with_adapter, read_adapter_config
from ..models.loader import resolve_bf16
from ..utils.errors import UserError


@dataclass(frozen=True)
class AdapterRun:
    folder: Path
    base_model: str
    load_in_4bit: bool
    bf16: bool
    peft_type: str


def resolve_run(path: str | Path, base: str | None = None, load_in_4bit: bool | None = None) -> AdapterRun:
    """A run folder's own settings (its resolved_config.yaml), else the adapter's ``base_model_name_or_path``;
    ``base`` and ``load_in_4bit`` given here win."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; pass a plugin.train output_dir or an adapter folder")
    config = read_adapter_config(folder)
    run = {}
    if (folder / RESOLVED_CONFIG_FILE).is_file():
        run = yaml.safe_load((folder / RESOLVED_CONFIG_FILE).read_text()) or {}
    base_model = base or run.get("base_model") or config.get("base_model_name_or_path")
    if not base_model:
        raise UserError(f"{folder}: the adapter does not name its base model; pass --base MODEL")
    return AdapterRun(folder, base_model, run.get("load_in_4bit", False) if load_in_4bit is None else load_in_4bit,
                      resolve_bf16(run.get("bf16", False)), config["peft_type"])


def load_run(run: AdapterRun, need_chat_template: bool = True):
    """(model in eval mode, tokenizer) for ``run``, the adapter checked to load completely."""
    model, tokenizer, _ = load_model_with_adapter(run.base_model, str(run.folder), run.load_in_4bit, run.bf16)
    if need_chat_template and tokenizer.chat_template is None:
        raise UserError(f"the tokenizer of {run.folder} has no chat template; chat needs one (train with "
                        "chat_template: chatml, or pass a base whose tokenizer has one)")
    return model, tokenizer
