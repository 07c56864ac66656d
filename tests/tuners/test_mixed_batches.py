"""PEFT's mixed-adapter batches (``adapter_names=[...]`` in forward and generate), as for LoRA: each row gets the
adapter named for it, ``"__base__"`` none; checked row by row against single-adapter runs of the same model."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from ..helpers import METHOD_CONFIGS, method_config, tiny_llama

METHODS = [m for m in METHOD_CONFIGS if m != "lora"]


def two_adapter_model(method: str):
    torch.manual_seed(1)
    model = get_peft_model(tiny_llama(), method_config(method), adapter_name="one")
    torch.manual_seed(2)
    model.add_adapter("two", method_config(method))
    return model.eval()


def single_adapter_logits(model, tokens, name):
    if name == "__base__":
        with model.disable_adapter():
            return model(tokens).logits
    model.set_adapter(name)
    return model(tokens).logits


@pytest.mark.parametrize("grad", [False, True], ids=["inference_path", "training_path"])
@pytest.mark.parametrize("method", METHODS)
def test_each_row_gets_its_adapter(method, grad, tokens):
    model = two_adapter_model(method)
    batch = torch.cat([tokens, tokens[:1]])  # 3 rows
    names = ["two", "__base__", "one"]
    with torch.set_grad_enabled(grad):
        mixed = model(batch, adapter_names=names).logits
        expected = torch.stack([single_adapter_logits(model, batch, name)[row] for row, name in enumerate(names)])
    assert torch.allclose(mixed, expected, atol=1e-5), (mixed - expected).abs().max()
    assert not torch.allclose(expected[0], expected[2], atol=1e-3)  # the adapters really differ (same tokens)


@pytest.mark.parametrize("method", ["mor", "mplora"])
def test_generate_with_adapter_names_equals_each_adapter_alone(method, tokens):
    model = two_adapter_model(method)
    prompt = torch.cat([tokens[:1], tokens[:1]])
    with torch.no_grad():
        mixed = model.generate(input_ids=prompt, adapter_names=["one", "two"], max_new_tokens=6, do_sample=False)
        alone = []
        for name in ("one", "two"):
            model.set_adapter(name)
            alone.append(model.generate(input_ids=prompt[:1], max_new_tokens=6, do_sample=False)[0])
    assert torch.equal(mixed, torch.stack(alone))


def test_unknown_names_and_training_mode_are_refused(tokens):
    model = two_adapter_model("mor")
    with pytest.raises(ValueError, match="non-existing adapter\\(s\\): three"):
        model(tokens, adapter_names=["one", "three"])
    with pytest.raises(ValueError, match="adapter_names has 1 names for a batch of 2 rows"):
        model(tokens, adapter_names=["one"])
    model.train()
    with pytest.raises(ValueError, match="Cannot pass `adapter_names` when the model is in training mode"):
        model(tokens, adapter_names=["one", "two"])
