"""The serving folder vLLM loads (no vLLM import here: the export side runs in the training environment).

A folder is the base model's own HF files (weights, tokenizer, generation_config.json) plus:

- ``config.json``: the base's, with ``architectures`` naming one registered architecture, ``<Method><BaseArch>``
  (e.g. ``MoRLlamaForCausalLM``: the method's display name, then the base's HF architecture), and the key
  ``plugin_adapter`` holding the adapter's PEFT ``adapter_config.json`` as it was saved;
- ``plugin_adapter.safetensors``: the adapter's tensors under their PEFT names
  (``base_model.model.model.layers.0.mlp.gate_proj.mor_A.weight``), byte for byte PEFT's ``adapter_model.safetensors``.
  vLLM reads every ``*.safetensors`` of a folder without an index; a sharded base's index names this file too.

There is no ``adapter_config.json`` in the folder: transformers would take the folder for a PEFT adapter.
"""

from __future__ import annotations

CONFIG_KEY = "plugin_adapter"
ADAPTER_FILE = "plugin_adapter.safetensors"
ADAPTER_NAME = "default"

# the HF architectures served, and the vLLM module whose class of that name each one wraps
BASES = {
    "LlamaForCausalLM": "vllm.model_executor.models.llama",
    "MistralForCausalLM": "vllm.model_executor.models.mistral",
    "Qwen2ForCausalLM": "vllm.model_executor.models.qwen2",
    "Qwen3ForCausalLM": "vllm.model_executor.models.qwen3",
}


# the HF projections (as these bases name them) that vLLM's fused and plain linear layers hold
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def method_names() -> dict[str, str]:
    """PEFT type (``MOR``) -> the display name that starts its architectures (``MoR``), for every method of the
    package (a method added with ``register_method`` is served too)."""
    from ...tuners import METHODS

    return {config_cls._peft_type_name: config_cls._display_name for config_cls, _ in METHODS.values()}


def tensor_prefix(peft_type: str) -> str:
    """The prefix of the method's tensor names (``mor_``): what follows the adapted module's name."""
    from ...tuners import METHODS

    return next(model_cls.prefix for config_cls, model_cls in METHODS.values()
                if config_cls._peft_type_name == peft_type)


def architectures() -> dict[str, tuple[str, str]]:
    """Every served architecture -> (PEFT type, base HF architecture)."""
    return {f"{display}{base}": (peft_type, base) for peft_type, display in method_names().items() for base in BASES}


def architecture(peft_type: str, base_architecture: str) -> str:
    """The architecture a folder of this method over this base names."""
    names = method_names()
    if peft_type not in names:
        raise ValueError(f"peft_type {peft_type!r} is not one of this package's methods ({', '.join(names)})")
    if base_architecture not in BASES:
        raise ValueError(f"base architecture {base_architecture!r} cannot be served with vLLM here; supported: "
                         f"{', '.join(BASES)}")
    return f"{names[peft_type]}{base_architecture}"
