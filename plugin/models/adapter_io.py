"""Load a saved adapter strictly: every weight of the file lands in the model and every adapter weight comes from it.

PEFT only warns about missing or unexpected keys, so a LoRA file labelled MOR, renamed keys or a ``peft_type``
mismatch would be scored as the bare base model under the adapter's name. Here each of those is one clear line.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..utils.errors import UserError, first_line


def read_adapter_config(folder: Path) -> dict:
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"no adapter at {folder} (missing adapter_config.json); pass a training output_dir")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{config_file} is not valid JSON ({first_line(err)}); was the save interrupted?") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file} must hold a JSON object")
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    if config.get("peft_type") not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise UserError(f"{config_file} has unknown peft_type {config.get('peft_type')!r}; "
                        "it was not saved by PEFT or this package")
    return config


def read_adapter_weights(folder: Path) -> dict:
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise UserError(f"adapter {folder} has no adapter_model.safetensors; was the save interrupted?")
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own types for truncated or foreign files
        raise UserError(f"{weights} is unreadable (truncated or not a safetensors file): {first_line(err)}") from None
    bad = [k for k, t in state.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise UserError(f"adapter {folder} has non-finite weights ({len(bad)} tensors, e.g. {bad[0]}); "
                        "its training diverged: retrain it with a lower learning_rate")
    return state


def adapter_parameters(model, name: str, layer_cls: type) -> dict:
    """Adapter ``name``'s parameters in the layers of type ``layer_cls`` under ``model`` (the transformers model),
    by the keys PEFT saves them under: ``base_model.model.<module>.<dict>.<param>``, the adapter name left out, and
    without the ``base_layer`` hops of other methods' layers wrapped around the same module."""
    import torch

    found = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, layer_cls):
            continue
        clean = ".".join(part for part in module_name.split(".") if part != "base_layer")
        for attr in module.adapter_layer_names:
            holder = getattr(module, attr)
            if name not in holder:
                continue
            key = f"base_model.model.{clean}.{attr}"
            if isinstance(holder[name], torch.nn.Parameter):
                found[key] = holder[name]
            else:
                found.update({f"{key}.{p}": param for p, param in holder[name].named_parameters()})
    return found


def copy_adapter_weights(params: dict, state: dict) -> None:
    """Copy a saved adapter's tensors into ``params`` (``adapter_parameters``' keys) in place, every key and shape
    checked before anything is written: a ValueError names the first that does not fit."""
    import torch

    missing, unexpected = sorted(params.keys() - state.keys()), sorted(state.keys() - params.keys())
    if missing or unexpected:
        parts = [f"{len(missing)} adapter weights missing from the file (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} weights in the file fit nothing (e.g. {unexpected[0]})" if unexpected else ""]
        raise ValueError("; ".join(p for p in parts if p))
    wrong = [key for key, param in params.items() if param.shape != state[key].shape]
    if wrong:
        raise ValueError(f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)} in the file, "
                         f"{tuple(params[wrong[0]].shape)} here")
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(state[key])


def _missing_fields(config: dict) -> list[str]:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    cls = PEFT_TYPE_TO_CONFIG_MAPPING[config["peft_type"]]
    own = {f.name for f in dataclasses.fields(cls)} - {f.name for f in dataclasses.fields(PEFT_TYPE_TO_CONFIG_MAPPING["LORA"])}
    return sorted(f for f in own if f not in config)


def load_adapter_strict(model, adapter: str, config: dict, state: dict, trainable: bool = False):
    """``PeftModel.from_pretrained(model, adapter)``, refused with one line unless the adapter loads completely.
    ``config`` and ``state`` are the folder's, read (and checked) before the base model loaded; ``trainable``: to
    go on training it."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    try:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        missing = _missing_fields(config)
        why = (f"its adapter_config.json lacks {', '.join(missing)} (the defaults do not fit its weights)" if missing
               else "trained for another model?")
        raise UserError(f"adapter {adapter} does not fit the base model ({why}): {first_line(err)}") from None
    current_key = getattr(model.base_model, "current_key", lambda key: key)  # our tuners rename 0.1.0's keys
    expected, saved = set(get_peft_model_state_dict(model)), {current_key(k) for k in state}
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    if missing or unexpected:
        parts = [f"{len(missing)} adapter weights missing from the file (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} weights in the file fit nothing (e.g. {unexpected[0]})" if unexpected else ""]
        raise UserError(f"adapter {adapter} does not load completely: {'; '.join(p for p in parts if p)}; "
                        f"is its peft_type ({config['peft_type']}) the method it was trained with?")
    return model


def load_model_with_adapter(base: str, adapter: str | None, load_in_4bit: bool = False, bf16: bool = False):
    """(model, tokenizer, identity): the base, optionally 4-bit, with the adapter applied by PEFT and checked to load
    completely; the tokenizer is the adapter folder's where it has one (a training run saves it), else the base's."""
    from .loader import load_base_model, load_tokenizer

    identity = {"base_model": base, "adapter": adapter, "load_in_4bit": load_in_4bit, "bf16": bf16}
    if adapter is not None:  # read and checked before the base model loads: a broken file fails fast
        identity["adapter_config"] = read_adapter_config(Path(adapter))
        adapter_state = read_adapter_weights(Path(adapter))
    tokenizer = load_tokenizer(adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base)
    model = load_base_model(base, load_in_4bit=load_in_4bit, bf16=bf16)
    if adapter is not None:
        model = load_adapter_strict(model, adapter, identity["adapter_config"], adapter_state)
    model.eval()
    return model, tokenizer, identity
