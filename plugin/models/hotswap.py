"""``plugin.hotswap_adapter(model, path_or_state_dict, adapter_name)``: PEFT's hotswap (``peft.utils.hotswap``,
LoRA only) for MPLoRA, MoR and LoRATRF. The loaded adapter's tensors are overwritten in place with another adapter's
of the same method, shapes and scaling, so a server swaps adapters without building a model, and a model compiled
with ``torch.compile`` runs on without compiling again (compiled graphs read tensors, not their values)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..tuners.base import LowRankModel, principal_init
from .adapter_io import adapter_parameters, copy_adapter_weights, read_adapter_config, read_adapter_weights

# settings whose difference changes shapes or scaling; the rest (paths, init, inference_mode) may differ
_MUST_MATCH = ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern")


@torch.no_grad()
def hotswap_adapter(model, path_or_state_dict: str | Path | dict, adapter_name: str = "default") -> None:
    peft_model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    tuner = getattr(peft_model, "base_model", None)
    if not isinstance(tuner, LowRankModel):
        raise ValueError("hotswap_adapter takes a PeftModel of MPLoRA, MoR or LoRATRF (for LoRA use "
                         "peft.utils.hotswap.hotswap_adapter)")
    if adapter_name not in tuner.peft_config:
        raise ValueError(f"no adapter named {adapter_name!r} is loaded; loaded: {', '.join(tuner.peft_config)}")
    config = tuner.peft_config[adapter_name]
    if principal_init(config.init_weights):
        raise ValueError(f"{adapter_name!r} was initialised with {config.init_weights}, which moved part of the base "
                         "weights into it: a swap would leave the wrong residual in the base; load the new adapter "
                         "instead")
    if isinstance(path_or_state_dict, dict):
        state = path_or_state_dict
    else:
        folder = Path(path_or_state_dict)
        new = read_adapter_config(folder)
        if new["peft_type"] != str(config.peft_type.value):
            raise ValueError(f"{folder} is a {new['peft_type']} adapter; {adapter_name!r} is {config.peft_type.value}")
        differ = [k for k in _MUST_MATCH if new.get(k, getattr(config, k)) != getattr(config, k)]
        if differ:
            raise ValueError(f"{folder} differs from {adapter_name!r} in {', '.join(differ)}, which set the "
                             "adapter's shapes or scaling; hotswapping needs them equal (load it as a new adapter)")
        state = read_adapter_weights(folder)
    try:
        copy_adapter_weights(adapter_parameters(tuner.model, adapter_name, tuner.tuner_layer_cls),
                             {tuner.current_key(key): tensor for key, tensor in state.items()})
    except ValueError as err:
        raise ValueError(f"the new adapter does not fit {adapter_name!r}: {err}; hotswapping needs the same keys "
                         "and shapes") from None
