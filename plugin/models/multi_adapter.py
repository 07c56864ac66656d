"""One base model holding adapters of several PEFT methods at once — MoR, LoRATRF, MPLoRA and PEFT's LoRA side by
side — with each row of a batch routed to its own adapter.

A ``PeftModel`` holds one peft type ("Cannot combine adapters with different peft types") and ``PeftMixedModel``
knows only PEFT's own types. Here each method's tuner injects its layers into the same base, as PeftMixedModel does:
where two methods adapt the same linear layer, the second wraps the first, and a row named for one adapter passes
every other layer unchanged. ``routed(adapter_names)`` hands the names to every adapter layer for one call, which
PEFT's mixed-batch forward (LoRA's and ours) then applies row by row.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer

from ..tuners import METHODS
from ..tuners.base import inject_adapter_names, principal_init
from ..utils.errors import UserError
from .adapter_io import adapter_parameters, copy_adapter_weights, read_adapter_config, read_adapter_weights

BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names
# the methods whose layers route rows by adapter_names (PEFT's other types do not)
SERVABLE = ("LORA", *(name.upper() for name in METHODS))


class MultiAdapterModel:
    """``base`` (a transformers model, adapted in place) with named adapters of any registered method."""

    def __init__(self, base: torch.nn.Module) -> None:
        self.base = base
        self.tuners: dict[str, BaseTuner] = {}  # peft_type -> the tuner that injected that method's layers
        self.adapters: dict[str, str] = {}  # adapter name -> peft_type

    def add(self, name: str, folder: Path) -> None:
        """Load the adapter in ``folder`` under ``name``, refused with one line unless every weight fits."""
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

        if name in self.adapters or name == BASE:
            raise UserError(f"an adapter named {name!r} is already loaded; pick another name")
        peft_type = read_adapter_config(folder)["peft_type"]
        if peft_type not in SERVABLE:
            raise UserError(f"adapter {folder} is {peft_type}; adapters of {', '.join(SERVABLE)} can share a base")
        state = read_adapter_weights(folder)
        config = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type].from_pretrained(str(folder))
        init = getattr(config, "init_weights", getattr(config, "init_lora_weights", True))
        if principal_init(init) or init in ("corda", "loftq"):
            raise UserError(f"adapter {folder} was initialised with {init}, which changes the base weights under it: "
                            "it cannot share a base with other adapters; merge it (MPLoRA, LoRA) or serve it alone")
        if getattr(config, "target_parameters", None):
            raise UserError(f"adapter {folder} adapts raw parameters ({', '.join(config.target_parameters)}), whose "
                            "modules mix every row's tokens, so rows cannot take different adapters there; merge it "
                            "(python -m plugin.export RUN --merge) and serve the merged model")
        if config.modules_to_save:
            raise UserError(f"adapter {folder} also trains whole modules ({', '.join(config.modules_to_save)}), "
                            "which cannot be shared between adapters on one base; serve it on its own base")
        config.inference_mode = True
        tuner = self.tuners.get(peft_type)
        try:
            if tuner is None:
                # a tuner reads the model's ``peft_config`` (set by the previous method's tuner) as its own
                vars(self.base).pop("peft_config", None)
                self.tuners[peft_type] = tuner = PEFT_TYPE_TO_TUNER_MAPPING[peft_type](self.base, config, name)
            else:
                tuner.peft_config[name] = config
                tuner.inject_adapter(self.base, name)
        except (ValueError, TypeError, RuntimeError) as err:
            raise UserError(f"adapter {folder} does not fit the base model: {str(err).splitlines()[0]}") from None
        self.adapters[name] = peft_type
        try:
            self._load_weights(name, tuner, state, folder)
        except UserError:
            self.remove(name)
            raise
        self.base.eval()

    def _load_weights(self, name: str, tuner: BaseTuner, state: dict, folder: Path) -> None:
        current_key = getattr(tuner, "current_key", lambda key: key)  # our tuners rename 0.1.0's keys
        try:
            copy_adapter_weights(adapter_parameters(self.base, name, tuner.tuner_layer_cls),
                                 {current_key(key): tensor for key, tensor in state.items()})
        except ValueError as err:
            raise UserError(f"adapter {folder} does not fit the base model: {err}") from None

    def remove(self, name: str) -> None:
        peft_type = self.adapters.pop(name)
        self.tuners[peft_type].delete_adapter(name)

    def adapter_bytes(self, name: str) -> int:
        tuner = self.tuners[self.adapters[name]]
        params = adapter_parameters(self.base, name, tuner.tuner_layer_cls)
        return sum(p.numel() * p.element_size() for p in params.values())

    @contextlib.contextmanager
    def routed(self, adapter_names: list[str]):
        """Within the block, row i of every forward (and ``generate``) goes through adapter ``adapter_names[i]``
        (``"__base__"``: the base model alone)."""
        unknown = sorted(set(adapter_names) - set(self.adapters) - {BASE})
        if unknown:
            raise ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(unknown)}")
        hook = functools.partial(inject_adapter_names, adapter_names=adapter_names)
        handles = [module.register_forward_pre_hook(hook, with_kwargs=True) for module in self.base.modules()
                   if isinstance(module, BaseTunerLayer)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
