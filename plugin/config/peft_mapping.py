"""The YAML -> PEFT mapping: the adapter keys every method shares with ``peft.LoraConfig``, plus the chosen method's
derived keys, make its PEFT config (whose own validation then speaks the YAML's key names)."""

from __future__ import annotations

import copy
import dataclasses
import re

from peft import LoraConfig, PeftConfig

from ..tuners import METHODS
from ..utils.errors import UserError
from .method_keys import method_keys
from .schema import TrainConfig, to_dict

# YAML key -> the peft.LoraConfig field of the same meaning (our tuners' configs share these names)
SHARED_KEYS = {"lora_r": "r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
               "lora_target_modules": "target_modules", "lora_modules_to_save": "modules_to_save",
               "peft_use_rslora": "use_rslora", "init_lora_weights": "init_lora_weights",
               "lora_rank_pattern": "rank_pattern", "lora_alpha_pattern": "alpha_pattern",
               "lora_target_parameters": "target_parameters"}
ALL_LINEAR = ("all-linear", "all", "all_linear")  # PEFT's, Axolotl's and LLaMA-Factory's spellings


def _yaml_message(message: str, method: str) -> str:
    """A tuner config's ValueError in the YAML's key names (num_experts -> mor_num_experts)."""
    for key, spec in method_keys().items():
        if spec.method == method:
            message = re.sub(rf"\b{spec.field}\b", key, message)
    return re.sub(r"\binit_weights\b", "init_lora_weights", message)


def peft_config_from_keys(keys: dict) -> PeftConfig:
    """The adapter's PEFT config from YAML keys (ours or Axolotl's: same names); missing or None keys take the
    defaults. ``adapter: lora`` gives a ``peft.LoraConfig``."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    keys = copy.deepcopy(keys)  # PEFT extends its config's lists in place (modules_to_save += classifier, score)
    common = {field: defaults[key] if keys.get(key) is None else keys[key] for key, field in SHARED_KEYS.items()}
    for pattern in ("rank_pattern", "alpha_pattern"):
        common[pattern] = common[pattern] or {}
    if keys.get("lora_target_linear") or common["target_modules"] in [[name] for name in ALL_LINEAR]:
        common["target_modules"] = "all-linear"  # PEFT's own shorthand: every linear layer but the output head
    # SEQ_CLS: PEFT trains and saves the new classifier head too (modules_to_save classifier / score)
    common["task_type"] = "SEQ_CLS" if keys.get("task") == "sequence_classification" or keys.get("rl") == "rm" \
        else "CAUSAL_LM"
    adapter = keys.get("adapter") or defaults["adapter"]
    if adapter == "lora":
        return LoraConfig(**{**common, "target_modules": common["target_modules"] or "all-linear"})
    common["init_weights"] = common.pop("init_lora_weights")  # our configs' name for it
    config_cls, _ = METHODS[adapter]
    own = {spec.field: keys[key] for key, spec in method_keys().items()
           if spec.method == adapter and keys.get(key) is not None}
    try:
        return config_cls(**common, **own)
    except ValueError as err:
        raise UserError(_yaml_message(str(err), adapter)) from None


def build_peft_config(cfg) -> PeftConfig:
    """The PEFT config of a loaded ``TrainConfig``."""
    return peft_config_from_keys(to_dict(cfg))
