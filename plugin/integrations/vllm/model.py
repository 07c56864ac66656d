"""The served architectures, one generic wrapper over each of vLLM's own model classes.

``MoRLlamaForCausalLM`` is vLLM's ``LlamaForCausalLM`` built as vLLM builds it, then the adapter of config.json's
``plugin_adapter`` installed on its projections (``layers.install``); its ``load_weights`` hands the adapter's
tensors (PEFT names, ``format.ADAPTER_FILE``) to vLLM's own loading with the ``base_model.model.`` prefix dropped,
so vLLM's ``hf_to_vllm_mapper`` tags q/k/v and gate/up tensors with their shard as it does the base's, and vLLM
checks that every parameter, the adapter's included, was loaded.

This module imports vLLM's model code: vLLM imports it (``ModelRegistry``, ``module:Class``) when a folder names one
of these architectures.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Iterable

import torch

from ...tuners import METHODS
from .format import ADAPTER_NAME, BASES, CONFIG_KEY, architectures
from .layers import install

PEFT_PREFIX = "base_model.model."


def adapter_config(hf_config, peft_type: str):
    """The PEFT config of the adapter config.json carries (``plugin_adapter``), checked to be of ``peft_type``."""
    raw = getattr(hf_config, CONFIG_KEY, None)
    if raw is None:
        raise ValueError(f"config.json has no {CONFIG_KEY!r} key (the adapter's adapter_config.json): write the "
                         "folder with the package's vLLM export")
    if isinstance(raw, str):
        raw = json.loads(raw)
    if raw.get("peft_type") != peft_type:
        raise ValueError(f"config.json's architectures name a {peft_type} model but its {CONFIG_KEY} is a "
                         f"{raw.get('peft_type')} adapter")
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in raw.items() if k in fields and k != "peft_type"})


def _tuner_model(peft_type: str) -> type:
    for config_cls, model_cls in METHODS.values():
        if config_cls._peft_type_name == peft_type:
            return model_cls
    raise ValueError(f"no method of this package has peft_type {peft_type!r}")


def _adapted_class(arch: str, peft_type: str, base_arch: str) -> type:
    base_cls = getattr(importlib.import_module(BASES[base_arch]), base_arch)
    model_cls = _tuner_model(peft_type)

    def __init__(self, *, vllm_config, prefix: str = "", **kwargs) -> None:
        base_cls.__init__(self, vllm_config=vllm_config, prefix=prefix, **kwargs)
        hf_config = vllm_config.model_config.hf_config
        self.adapted_modules = install(self, hf_config, adapter_config(hf_config, peft_type), model_cls,
                                       ADAPTER_NAME)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return base_cls.load_weights(self, _without_peft_prefix(weights, model_cls))

    doc = (f"vLLM's {base_arch} with a {peft_type} adapter on its projections (plugin.integrations.vllm).")
    return type(arch, (base_cls,), {"__init__": __init__, "load_weights": load_weights, "__doc__": doc,
                                    "__module__": __name__, "__qualname__": arch})


def _without_peft_prefix(weights, model_cls):
    for name, tensor in weights:
        if name.startswith(PEFT_PREFIX):  # the adapter's tensors; 0.1.0's bare names get their current ones
            name = model_cls.current_key(name)[len(PEFT_PREFIX):]
        yield name, tensor


def __getattr__(name: str):
    """The classes are made on first use (each imports its vLLM model module)."""
    archs = architectures()
    if name not in archs:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = globals()[name] = _adapted_class(name, *archs[name])
    return cls
