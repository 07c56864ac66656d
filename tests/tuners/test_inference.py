"""No-grad forwards (generation, evaluation) take an inference path built from weights prepared once per update:
MoR's [A; router] in one matmul and its folded, pre-scaled expert matrix; LoRATRF's unit task vector stacked under A
(input mode) or T_A (output mode) and its pre-scaled B. It must give the training-mode output, and follow every
weight change, scaling change and adapter switch."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

import plugin

from ..helpers import method_config, tiny_llama

CONFIGS = {
    "mor": lambda: method_config("mor"),
    "mor_dropout": lambda: method_config("mor", lora_dropout=0.1),
    "loratrf_output": lambda: method_config("loratrf_output", lora_dropout=0.1),
    "loratrf_input": lambda: method_config("loratrf_input", lora_dropout=0.1),
}


def _logits(model, tokens, grad: bool):
    with torch.set_grad_enabled(grad):
        return model(tokens).logits.detach()


def _assert_same(fast, slow):
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-6), (fast - slow).abs().max()


@pytest.mark.parametrize("method", list(CONFIGS))
def test_inference_path_equals_training_path(method, tokens):
    model = get_peft_model(tiny_llama(), CONFIGS[method]()).eval()
    slow = _logits(model, tokens, grad=True)
    fast = _logits(model, tokens, grad=False)
    _assert_same(fast, slow)
    assert not torch.allclose(slow, _base_logits(model, tokens))  # the adapter acts
    cached = [layer.inference_cache for layer in _layers(model)]
    assert all(cache for cache in cached)  # built on the first no-grad forward
    assert _logits(model, tokens, grad=False).equal(fast)  # and reused


def _base_logits(model, tokens):
    with model.disable_adapter(), torch.no_grad():
        return model(tokens).logits


def _layers(model):
    from plugin.tuners.base import LowRankLayer

    return [m for m in model.modules() if isinstance(m, LowRankLayer)]


@pytest.mark.parametrize("method", list(CONFIGS))
def test_inference_cache_follows_optimizer_steps_and_loading(method, tokens):
    model = get_peft_model(tiny_llama(), CONFIGS[method]())
    before = _logits(model.eval(), tokens, grad=False)  # caches built
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(tokens, labels=tokens).loss.backward()
    optimizer.step()
    model.eval()
    after = _logits(model, tokens, grad=False)
    assert not torch.allclose(after, before)
    _assert_same(after, _logits(model, tokens, grad=True))
    # loading other weights in place (load_state_dict copies into the same tensors)
    other = get_peft_model(tiny_llama(), CONFIGS[method]())
    torch.manual_seed(3)
    with torch.no_grad():
        for p in other.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    model.load_state_dict(other.state_dict())
    _assert_same(_logits(model, tokens, grad=False), _logits(other.eval(), tokens, grad=True))


@pytest.mark.parametrize("method", list(CONFIGS))
def test_inference_cache_follows_adapter_switches(method, tokens):
    model = get_peft_model(tiny_llama(), CONFIGS[method](), adapter_name="a")
    torch.manual_seed(5)
    model.add_adapter("b", CONFIGS[method]())
    model.eval()
    outputs = {}
    for name in ("a", "b", "a"):
        model.set_adapter(name)
        fast = _logits(model, tokens, grad=False)
        _assert_same(fast, _logits(model, tokens, grad=True))
        outputs.setdefault(name, fast)
        assert fast.equal(outputs[name])
    assert not torch.allclose(outputs["a"], outputs["b"])


@pytest.mark.parametrize("method", ["mor", "loratrf_output", "loratrf_input"])
def test_inference_cache_follows_scaling_changes(method, tokens):
    model = get_peft_model(tiny_llama(), CONFIGS[method]()).eval()
    before = _logits(model, tokens, grad=False)
    for layer in _layers(model):
        layer.scaling["default"] *= 3  # what PEFT's set_scale / scale_layer do
    after = _logits(model, tokens, grad=False)
    assert not torch.allclose(after, before)
    _assert_same(after, _logits(model, tokens, grad=True))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_training_mode_keeps_the_training_path(config, tokens):
    """Train mode without grad is not inference: dropout draws masks there, and reentrant checkpointing runs
    training forwards that way (they must record their auxiliary terms). Only eval mode uses the cache."""
    model = get_peft_model(tiny_llama(), CONFIGS[config]()).train()
    _logits(model, tokens, grad=False)
    assert not any(layer.inference_cache for layer in _layers(model))


def test_nan_merge_message_is_peft_verbatim():
    """PEFT's tuners say: NaNs detected in the merged weights. The adapter {name} seems to be broken."""
    messages = {}
    for key, config in (("lora", LoraConfig(r=4, target_modules=["q_proj"])),
                        ("mplora", plugin.MPLoraConfig(r=4, num_paths=2, target_modules=["q_proj"]))):
        model = get_peft_model(tiny_llama(), config, adapter_name="broken")
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "_B" in name:
                    p.fill_(float("nan"))
        with pytest.raises(ValueError) as err:
            model.merge_and_unload(safe_merge=True)
        messages[key] = str(err.value)
    assert messages["mplora"] == messages["lora"] == "NaNs detected in the merged weights. The adapter broken seems to be broken"


@pytest.mark.parametrize("method", ["mor", "loratrf_output"])
def test_inference_cache_follows_an_optimizer_that_bypasses_version_counters(method, tokens):
    """bitsandbytes' 8-bit AdamW (QLoRA recipes' optimizer) writes the weights without bumping their ``_version``:
    the Trainer's train() before each step must drop the cache, or every later evaluation reads the first one's
    weights."""
    bnb = pytest.importorskip("bitsandbytes")
    model = get_peft_model(tiny_llama(), CONFIGS[method]())
    before = _logits(model.eval(), tokens, grad=False)  # caches built
    params = [p for p in model.parameters() if p.requires_grad]
    versions = [p._version for p in params]
    optimizer = bnb.optim.AdamW8bit(params, lr=0.05, min_8bit_size=1)
    model.train()
    model(tokens, labels=tokens).loss.backward()
    optimizer.step()
    assert [p._version for p in params] == versions  # what makes the version key blind here
    model.eval()
    after = _logits(model, tokens, grad=False)
    assert not torch.allclose(after, before)
    _assert_same(after, _logits(model, tokens, grad=True))



@pytest.mark.parametrize("case", ["rows", "batch", "slice_of_wider", "strided_batch", "bf16_result"])
def test_add_product_writes_the_sum_into_result(case):
    """The inference paths add their last matmul into the layer's output; vLLM's fused layers hand over a slice."""
    from plugin.tuners.base import add_product_

    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4), torch.randn(4, 5)
    wide = torch.randn(2, 3, 9)
    result = {"rows": wide[0, :, :5].contiguous(), "batch": wide[..., :5].contiguous(),
              "slice_of_wider": wide[0, :, 2:7], "strided_batch": wide[..., 2:7],
              "bf16_result": wide[..., :5].to(torch.bfloat16)}[case]
    a = a[0] if result.dim() == 2 else a
    expected = (result.float() + a @ b).to(result.dtype)
    before = wide.clone()
    out = add_product_(result, a, b)
    assert out is result
    tolerance = {"rtol": 2e-2, "atol": 5e-2} if case == "bf16_result" else {"rtol": 1e-6, "atol": 1e-5}
    assert torch.allclose(result.float(), expected.float(), **tolerance)
    if case in ("slice_of_wider", "strided_batch"):  # the rest of the wider output is untouched
        outside = torch.ones_like(wide, dtype=torch.bool)
        outside[..., 2:7] = False
        assert wide[outside].equal(before[outside]) and not wide[..., 2:7].equal(before[..., 2:7])
