"""GPT-2 style Conv1D layers (weight stored in x out): ``fan_in_fan_out`` is set as PEFT's LoRA sets it, with its
warning, and MPLoRA's merge is exact there."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from ..helpers import method_config


@pytest.mark.parametrize("targets", [["c_attn"], ["c_proj"], ["c_attn", "c_proj", "c_fc"]])
def test_mplora_merge_on_conv1d_equals_unmerged(targets, tokens):
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    with pytest.warns(UserWarning, match="the target module is `Conv1D`. Setting fan_in_fan_out to True"):
        model = get_peft_model(base, method_config("mplora", target_modules=targets))
    assert model.peft_config["default"].fan_in_fan_out
    with torch.no_grad():
        unmerged = model(tokens).logits
        with model.disable_adapter():
            assert not torch.allclose(model(tokens).logits, unmerged, atol=1e-4)  # the adapter acts
        merged = model.merge_and_unload(safe_merge=True)(tokens).logits
    assert torch.allclose(merged, unmerged, atol=1e-5), (merged - unmerged).abs().max()
