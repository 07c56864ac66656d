"""Equal-budget comparisons: the adapter parameters a run trains, and the LoRA rank that trains as many.

Counted on the model's shapes alone (built on the meta device: no weights loaded), over the adapter's own
parameters: the classifier head and ``modules_to_save`` copies train identically under every method, so they are left
out of the match.
"""

from __future__ import annotations

import functools
import json
import re

from ..config.peft_mapping import peft_config_from_keys
from ..utils.errors import UserError

TOLERANCE = 0.05  # a matched LoRA trains within 5% of the method's adapter parameters


def _adapted_model(base_model: str, keys: dict):
    """The run's PEFT model on the meta device: its shapes, no weights."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from ..models.loader import resolve_model_path

    classify = keys.get("task") == "sequence_classification"
    config = AutoConfig.from_pretrained(resolve_model_path(base_model),
                                        **({"num_labels": keys["num_labels"]} if classify else {}))
    auto = AutoModelForSequenceClassification if classify else AutoModelForCausalLM
    with torch.device("meta"):
        return get_peft_model(auto.from_config(config), peft_config_from_keys(keys))


def adapter_parameter_count(base_model: str, keys: dict) -> int:
    """Trainable adapter parameters of the run that ``keys`` (plugin.train keys) describe."""
    return _count(base_model, json.dumps(keys, sort_keys=True))


@functools.lru_cache(maxsize=None)  # a study asks once per run and seed; the answer depends on shapes only
def _count(base_model: str, keys: str) -> int:
    return sum(p.numel() for name, p in _adapted_model(base_model, json.loads(keys)).named_parameters()
               if p.requires_grad and "modules_to_save" not in name)


def matched_lora_keys(base_model: str, keys: dict, target: int, what: str) -> dict:
    """``lora_r`` and ``lora_rank_pattern`` for a LoRA that, at ``keys``' targets, trains ``target`` adapter
    parameters within 5%: one rank everywhere, raised by one on the largest layers that still fit (a layer's LoRA
    count is its rank times d_in + d_out). lora_alpha stays the study's: LoRA's alpha / r scaling is there so that
    a change of rank needs no new step size."""
    from peft.tuners.lora import LoraLayer

    model = _adapted_model(base_model, {**keys, "adapter": "lora", "lora_r": 1, "lora_rank_pattern": {}})
    per_rank = {name.removeprefix("base_model.model."): sum(p.numel() for p in module.parameters() if p.requires_grad)
                for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    rank = max(1, int(target // sum(per_rank.values())))
    left, pattern = target - rank * sum(per_rank.values()), {}
    for name, size in sorted(per_rank.items(), key=lambda item: -item[1]):
        if size <= left:
            pattern[re.escape(name)] = rank + 1
            left -= size
    if abs(left) > TOLERANCE * target:
        raise UserError(f"{what}: no LoRA at these targets trains within 5% of {target:,} adapter parameters (the "
                        f"closest trains {target - left:,}); match a larger run or change the targets")
    return {"lora_r": rank, "lora_rank_pattern": pattern}
