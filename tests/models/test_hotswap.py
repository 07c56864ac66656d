"""``plugin.hotswap_adapter`` and MPLoRA's ``add_weighted_adapter``, against independent references: a swapped model
equals a fresh load of the new adapter (eager, and compiled without a second compilation); a weighted adapter
equals the base with the weighted updates added to its weights by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model

import plugin

from ..helpers import METHOD_CONFIGS, method_config, tiny_llama

IDS = torch.tensor([[5, 17, 9, 33, 2, 41, 7]])


def _save(folder, method, seed, **overrides):
    base = tiny_llama()
    torch.manual_seed(seed)  # after the base, which seeds its own init
    get_peft_model(base, method_config(method, target_modules=["q_proj", "v_proj", "up_proj"],
                                       **overrides)).save_pretrained(folder)
    return folder


def _loaded(folder):
    return PeftModel.from_pretrained(tiny_llama(), folder).eval()


@pytest.mark.parametrize("method", [m for m in METHOD_CONFIGS if m != "lora"])
def test_hotswap_equals_a_fresh_load(tmp_path, method):
    first, second = _save(tmp_path / "a", method, 1), _save(tmp_path / "b", method, 2)
    model = _loaded(first)
    with torch.no_grad():
        before = model(IDS).logits  # fills the inference caches, which the swap must invalidate
        plugin.hotswap_adapter(model, second, "default")
        after = model(IDS).logits
        expected = _loaded(second)(IDS).logits
    torch.testing.assert_close(after, expected)
    assert (before - after).abs().max() > 1e-4


@pytest.mark.slow
def test_hotswap_under_torch_compile_does_not_compile_again(tmp_path):
    import torch._dynamo

    first, second = _save(tmp_path / "a", "mplora", 1), _save(tmp_path / "b", "mplora", 2)
    torch._dynamo.reset()
    compiled = torch.compile(_loaded(first), backend="eager")
    with torch.no_grad():
        compiled(IDS)
        frames = torch._dynamo.utils.counters["frames"]["ok"]
        plugin.hotswap_adapter(compiled, second, "default")
        after = compiled(IDS).logits
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames  # no frame compiled again
    torch.testing.assert_close(after, _loaded(second)(IDS).logits)


def test_hotswap_refuses_what_does_not_fit(tmp_path):
    model = _loaded(_save(tmp_path / "a", "mor", 1))
    with pytest.raises(ValueError, match="is a MPLORA adapter; 'default' is MOR"):
        plugin.hotswap_adapter(model, _save(tmp_path / "mp", "mplora", 2))
    with pytest.raises(ValueError, match="differs from 'default' in r"):
        plugin.hotswap_adapter(model, _save(tmp_path / "r", "mor", 2, r=3))
    with pytest.raises(ValueError, match="no adapter named 'other'"):
        plugin.hotswap_adapter(model, tmp_path / "a", "other")


@pytest.mark.parametrize("combination_type", ["cat", "svd"])
def test_weighted_mplora_adapter_is_the_weighted_sum_of_updates(combination_type):
    model = get_peft_model(tiny_llama(), method_config("mplora", target_modules=["q_proj", "v_proj"]))
    model.add_adapter("b", method_config("mplora", target_modules=["q_proj", "up_proj"], r=3))
    weights = {"default": 0.7, "b": -1.3}
    model.add_weighted_adapter(list(weights), list(weights.values()), "mix", combination_type=combination_type,
                               svd_rank=11 if combination_type == "svd" else None)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for layer in reference.modules():
            if hasattr(layer, "mplora_A"):
                for name, w in weights.items():
                    if name in layer.mplora_A:
                        layer.get_base_layer().weight += (w * layer.scaling[name] * layer.mplora_B[name].weight
                                                          @ layer.mplora_A[name].weight)
        model.set_adapter("mix")
        mixed = model.eval()(IDS).logits
        with reference.disable_adapter():
            expected = reference.eval()(IDS).logits
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method, why", [("mor", "its router makes the update depend on each token"),
                                         ("loratrf_output", "its task-relevance filter scales each token")])
def test_weighted_adapters_of_token_dependent_methods_are_refused(method, why):
    model = get_peft_model(tiny_llama(), method_config(method, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=f"add_weighted_adapter is not available for .*: {why}"):
        model.add_weighted_adapter(["default"], [1.0], "x")


def test_hotswap_refuses_an_adapter_that_changed_its_base(tmp_path):
    model = _loaded(_save(tmp_path / "a", "mor", 1, init_weights="olora"))
    with pytest.raises(ValueError, match="initialised with olora, which moved part of the base weights"):
        plugin.hotswap_adapter(model, tmp_path / "a")
