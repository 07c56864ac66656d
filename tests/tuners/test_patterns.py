"""LoRA's ``rank_pattern`` / ``alpha_pattern`` for each method (LoRA's key matching, saved and reloaded); refusals of
what these methods cannot do; the warning for MoE experts that ``target_modules`` cannot reach (MPLoRA's
``target_parameters``: test_target_parameters.py)."""

from __future__ import annotations

import warnings

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import MixtralConfig, MixtralForCausalLM

from ..helpers import METHOD_CONFIGS, method_config, tiny_llama


@pytest.mark.parametrize("method", list(METHOD_CONFIGS))
def test_patterns_set_each_layers_rank_and_alpha_and_survive_a_reload(tmp_path, method):
    config = method_config(method, target_modules=["q_proj", "down_proj"], rank_pattern={"down_proj": 3},
                           alpha_pattern={"layers.0.self_attn.q_proj": 64})
    model = get_peft_model(tiny_llama(), config)
    first, second = model.base_model.model.model.layers
    assert (first.mlp.down_proj.r["default"], first.self_attn.q_proj.r["default"]) == (3, config.r)
    assert first.mlp.down_proj.scaling["default"] == pytest.approx(config.lora_alpha / 3)
    assert first.self_attn.q_proj.scaling["default"] == pytest.approx(64 / config.r)
    assert second.self_attn.q_proj.scaling["default"] == pytest.approx(config.lora_alpha / config.r)
    ids = torch.randint(0, 100, (2, 7))
    expected = model.eval()(ids).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(tiny_llama(), tmp_path).eval()
    assert reloaded.base_model.model.model.layers[0].mlp.down_proj.r["default"] == 3
    torch.testing.assert_close(reloaded(ids).logits, expected)


def test_a_pattern_that_matches_no_adapted_layer_is_an_error():
    with pytest.raises(ValueError, match="rank_pattern key 'o_proj' matches no adapted layer"):
        get_peft_model(tiny_llama(), method_config("mor", target_modules=["q_proj"], rank_pattern={"o_proj": 4}))
    with pytest.raises(ValueError, match="rank_pattern\\['q_proj'\\] must be a positive integer"):
        method_config("mplora", rank_pattern={"q_proj": 0})


@pytest.mark.parametrize("method, name", [("mor", "MoR"), ("loratrf_output", "LoRATRF")])
def test_target_parameters_is_refused_with_the_reason(method, name):
    with pytest.raises(ValueError, match=f"target_parameters is not supported for {name}: its update depends on each "
                                         "token"):
        method_config(method, target_parameters=["experts.gate_up_proj"])


def _tiny_mixtral():
    return MixtralForCausalLM(MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, vocab_size=100,
                                            num_attention_heads=2, num_key_value_heads=2, num_local_experts=4))


def test_moe_experts_left_untouched_are_named_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_peft_model(_tiny_mixtral(), method_config("mor", target_modules=["q_proj", "v_proj"]))
        get_peft_model(tiny_llama(), method_config("mor", target_modules=["q_proj", "v_proj"]))  # dense: silent
    said = [str(w.message) for w in caught if "routed-expert" in str(w.message)]
    assert len(said) == 1
    assert said[0].startswith("4 routed-expert weight tensors (e.g. model.layers.0.mlp.experts.gate_up_proj)")
