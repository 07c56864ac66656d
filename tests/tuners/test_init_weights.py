"""``init_weights`` takes the LoRA choices implemented here (True, False, 'gaussian'); any other value, e.g. LoRA's
'pissa', is refused naming the choices rather than silently giving the default init."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from ..helpers import METHOD_CONFIGS, method_config, tiny_llama

METHODS = [m for m in METHOD_CONFIGS if m != "lora"]


@pytest.mark.parametrize("method", METHODS)
def test_gaussian_init_is_lora_gaussian_and_an_identity(method, tokens):
    base = tiny_llama()
    with torch.no_grad():
        expected = base(tokens).logits
    model = get_peft_model(base, method_config(method, r=16, init_weights="gaussian", target_modules=["up_proj"]))
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    a, b = layer.lora_A_dict["default"].weight, layer.lora_B_dict["default"].weight
    assert abs(a.std().item() - 1 / 16) < 0.01 and not b.any()  # kaiming-uniform: std ~0.10 here
    with torch.no_grad():
        assert torch.allclose(model(tokens).logits, expected, atol=1e-6)


@pytest.mark.parametrize("value", ["pissa", "olora", "loftq", 1.5])
def test_other_inits_are_refused_naming_the_choices(value):
    with pytest.raises(ValueError, match="init_weights must be True, False or 'gaussian'"):
        method_config("mor", init_weights=value)
