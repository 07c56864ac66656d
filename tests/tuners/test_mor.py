"""MoR: N=1 is LoRA, the folded form equals a per-expert loop, no tokens x N x d_out tensor, router API."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.utils._python_dispatch import TorchDispatchMode

import plugin
from plugin.tuners.mor import MoRLayer, switch_balance_loss

from ..helpers import tiny_llama


def naive_mor_delta(layer: MoRLayer, x: torch.Tensor, name: str = "default") -> torch.Tensor:
    """Reference: one B (Omega_A[i] * A x) per expert, gated and summed, as the paper writes it."""
    a, b = layer.mor_A[name].weight, layer.mor_B[name].weight
    oa, ob = layer.mor_omega_A[name].weight, layer.mor_omega_B[name].weight
    gates = torch.softmax(x @ layer.mor_router[name].weight.T, dim=-1)
    z = x @ a.T
    out = torch.zeros(*x.shape[:-1], b.shape[0])
    for i in range(oa.shape[0]):
        out = out + gates[..., i : i + 1] * ob[i] * ((oa[i] * z) @ b.T)
    return layer.scaling[name] * out


def test_one_expert_equals_peft_lora(tokens):
    common = dict(r=4, lora_alpha=32, target_modules=["gate_proj", "up_proj", "down_proj"])
    lora = get_peft_model(tiny_llama(), LoraConfig(init_lora_weights=False, **common))
    mor = get_peft_model(tiny_llama(), plugin.MoRConfig(num_experts=1, **common))
    for name, module in mor.named_modules():
        if isinstance(module, MoRLayer):
            ref = lora.get_submodule(name)
            module.mor_A["default"].weight.data.copy_(ref.lora_A["default"].weight)
            module.mor_B["default"].weight.data.copy_(ref.lora_B["default"].weight)
    with torch.no_grad():
        torch.testing.assert_close(mor(tokens).logits, lora(tokens).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_experts", [1, 3, 8])
def test_layer_equals_per_expert_loop(num_experts):
    model = get_peft_model(tiny_llama(), plugin.MoRConfig(r=4, num_experts=num_experts, init_weights=False,
                                                          target_modules=["up_proj"]))
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        got = layer(x) - layer.base_layer(x)
        torch.testing.assert_close(got, naive_mor_delta(layer, x), rtol=1e-5, atol=1e-5)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op produces (forward and backward both run under it)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_never_materialises_tokens_by_experts_by_dout():
    tokens, d_in, d_out, n, r = 64, 8, 48, 8, 4
    layer = get_peft_model(torch.nn.Sequential(torch.nn.Linear(d_in, d_out)), plugin.MoRConfig(
        r=r, num_experts=n, target_modules=["0"], init_weights=False, router_aux_loss_coef=1.0)).base_model.model[0]
    x = torch.randn(tokens, d_in, requires_grad=True)
    with _LargestTensor() as probe:
        out = layer(x).sum() + layer.aux_losses("default")["router_balance_loss"]
        out.backward()
    # the biggest legitimate tensors are tokens x d_out (output) and tokens x N*r, the experts' N*r x d_out matrix
    # and the frozen d_out x d_in weight; tokens*N*d_out = 24,576
    assert probe.largest == max(tokens * d_out, tokens * n * r, d_out * n * r, d_out * d_in)
    assert probe.largest < tokens * n * d_out


def test_router_weights_are_mean_gates_of_last_forward(tokens):
    model = get_peft_model(tiny_llama(), plugin.MoRConfig(r=4, num_experts=5, init_weights=False))
    with torch.no_grad():
        model(tokens)
    weights = plugin.router_weights(model)
    assert len(weights) == 2 * 3  # 2 layers x gate/up/down
    layer = model.base_model.model.model.layers[1].mlp.down_proj
    for w in weights.values():
        assert w.shape == (5,) and w.sum().item() == pytest.approx(1.0, abs=1e-5)
    # recompute the mean gate of one layer from its real input
    captured = {}

    def capture_input(module, inputs, output):
        captured["x"] = inputs[0]

    hook = layer.register_forward_hook(capture_input)
    with torch.no_grad():
        model(tokens)
    hook.remove()
    expected = torch.softmax(captured["x"] @ layer.mor_router["default"].weight.T, -1).reshape(-1, 5).mean(0)
    torch.testing.assert_close(weights["base_model.model.model.layers.1.mlp.down_proj"], expected)


def test_balance_loss_matches_switch_formula_and_is_trained():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    # argmax: 0, 1, 0, 2 -> f = (0.5, 0.25, 0.25); P = column means
    p = probs.mean(0)
    expected = 3 * (0.5 * p[0] + 0.25 * p[1] + 0.25 * p[2])
    assert switch_balance_loss(probs).item() == pytest.approx(expected.item())

    model = get_peft_model(tiny_llama(), plugin.MoRConfig(r=4, num_experts=4, router_aux_loss_coef=0.01,
                                                          init_weights=False)).train()
    model(torch.randint(0, 128, (2, 6)))
    total, logs = plugin.weighted_aux_loss(model, step=0)
    assert logs["router_balance_loss"] >= 6 * 1.0 - 1e-4  # each of 6 layers contributes >= 1 (perfect balance)
    total.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "mor_router" in n)
    assert plugin.weighted_aux_loss(model, step=0) == (None, {})  # consumed: added once per forward


def test_no_balance_loss_by_default(tokens):
    model = get_peft_model(tiny_llama(), plugin.MoRConfig(init_weights=False)).train()
    model(tokens)
    assert plugin.weighted_aux_loss(model, step=0) == (None, {})


def test_merge_is_a_clear_error_and_unload_works(tokens):
    base = tiny_llama()
    with torch.no_grad():
        expected = base(tokens).logits
    model = get_peft_model(base, plugin.MoRConfig(init_weights=False))
    with pytest.raises(ValueError, match="MoR cannot be merged: its router"):
        model.merge_and_unload()
    unloaded = model.unload()
    assert not any("mor_" in n for n, _ in unloaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(unloaded(tokens).logits, expected)


def _llama2_7b_meta():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000)
    with torch.device("meta"):
        return LlamaForCausalLM(cfg)


def test_paper_parameter_counts_llama2_7b_ffn():
    ffn = ["gate_proj", "up_proj", "down_proj"]
    lora, _ = get_peft_model(_llama2_7b_meta(), LoraConfig(r=8, target_modules=ffn)).get_nb_trainable_parameters()
    mor, _ = get_peft_model(_llama2_7b_meta(), plugin.MoRConfig(r=8, num_experts=8, target_modules=ffn)
                            ).get_nb_trainable_parameters()
    assert round(lora / 1e6, 1) == 11.6
    assert round(mor / 1e6, 1) == 23.2
    # per layer: (d_in + d_out) r + N (d_in + d_out + r), summed over gate, up, down and 32 blocks
    assert mor == 32 * 3 * ((4096 + 11008) * 8 + 8 * (4096 + 11008 + 8))
