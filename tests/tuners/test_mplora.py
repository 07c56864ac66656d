"""MPLoRA: LoRA's forward, the orthogonality loss against a hand computation, exact merge."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

import plugin
from plugin.tuners.mplora import orthogonality_loss

from ..helpers import tiny_llama


def hand_orth_loss(b: torch.Tensor, n: int) -> float:
    """Independent reference: explicit row ranges, pairs i<j, rows past the shorter block ignored."""
    d_out = b.shape[0]
    sizes = [d_out // n + (1 if i < d_out % n else 0) for i in range(n)]
    starts = [sum(sizes[:i]) for i in range(n)]
    total = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            m = min(sizes[i], sizes[j])
            bi = b[starts[i] : starts[i] + m].double()
            bj = b[starts[j] : starts[j] + m].double()
            total += float(((bi.T @ bj) ** 2).sum())
    return total


@pytest.mark.parametrize("d_out,n", [(70, 4), (70, 8), (12, 3), (7, 7), (9, 2)])
def test_orthogonality_loss_matches_hand_computation(d_out, n):
    b = torch.randn(d_out, 5, generator=torch.Generator().manual_seed(d_out + n))
    assert orthogonality_loss(b, n).item() == pytest.approx(hand_orth_loss(b, n), rel=1e-5)


def test_one_path_has_zero_orthogonality_loss():
    model = get_peft_model(tiny_llama(), plugin.MPLoraConfig(r=4, num_paths=1, init_weights=False))
    assert plugin.aux_loss_terms(model) == {}
    total, logs = plugin.weighted_aux_loss(model, step=0)
    assert total is None and logs == {}


def test_layer_orth_loss_sums_over_layers_and_respects_start_step():
    cfg = plugin.MPLoraConfig(r=4, num_paths=4, orth_weight=0.5, orth_start_step=3, init_weights=False,
                              target_modules=["up_proj"])
    model = get_peft_model(tiny_llama(), cfg)
    expected = sum(
        hand_orth_loss(layer.mplora_B["default"].weight.detach(), 4)
        for layer in (blk.mlp.up_proj for blk in model.base_model.model.model.layers)
    )
    model.train()(torch.randint(0, 128, (1, 4)))  # the loss is computed in the training forward
    total, logs = plugin.weighted_aux_loss(model, step=3)
    assert logs["orth_loss"] == pytest.approx(expected, rel=1e-5)
    assert total.item() == pytest.approx(0.5 * expected, rel=1e-5)
    assert plugin.weighted_aux_loss(model, step=3) == (None, {})  # handed out once per forward
    model(torch.randint(0, 128, (1, 4)))
    before_start, logs = plugin.weighted_aux_loss(model, step=2)
    assert before_start is None and logs["orth_loss"] == pytest.approx(expected, rel=1e-5)
    model.eval()(torch.randint(0, 128, (1, 4)))  # evaluation forwards add no auxiliary loss
    assert plugin.weighted_aux_loss(model, step=3) == (None, {})


def _copy_lora_into(mp_model, lora_model):
    for name, module in mp_model.named_modules():
        if hasattr(module, "mplora_A"):
            lora = lora_model.get_submodule(name)
            module.mplora_A["default"].weight.data.copy_(lora.lora_A["default"].weight)
            module.mplora_B["default"].weight.data.copy_(lora.lora_B["default"].weight)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_forward_equals_peft_lora(tokens, use_rslora):
    common = dict(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj", "down_proj"], use_rslora=use_rslora)
    lora = get_peft_model(tiny_llama(), LoraConfig(init_lora_weights=False, **common))
    mp = get_peft_model(tiny_llama(), plugin.MPLoraConfig(num_paths=3, **common))
    _copy_lora_into(mp, lora)
    with torch.no_grad():
        torch.testing.assert_close(mp(tokens).logits, lora(tokens).logits, rtol=0, atol=1e-6)
        assert not torch.allclose(mp(tokens).logits, tiny_llama()(tokens).logits, atol=1e-4)


def test_merge_and_unload_equals_forward(tokens):
    model = get_peft_model(tiny_llama(), plugin.MPLoraConfig(r=4, num_paths=2, init_weights=False,
                                                             target_modules=["q_proj", "up_proj"]))
    with torch.no_grad():
        expected = model(tokens).logits
        merged = model.merge_and_unload(safe_merge=True)
        assert not any("mplora" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(tokens).logits, expected, rtol=1e-5, atol=1e-5)


def test_merge_then_unmerge_restores_base_weights():
    model = get_peft_model(tiny_llama(), plugin.MPLoraConfig(r=4, init_weights=False, target_modules=["q_proj"]))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    w0 = layer.base_layer.weight.detach().clone()
    delta = layer.mplora_B["default"].weight @ layer.mplora_A["default"].weight * layer.scaling["default"]
    model.merge_adapter()
    torch.testing.assert_close(layer.base_layer.weight.detach(), w0 + delta.detach())
    model.unmerge_adapter()
    torch.testing.assert_close(layer.base_layer.weight.detach(), w0)


def test_gpt2_conv1d_merge_equals_forward():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=24, n_layer=2, n_head=2, n_positions=32)).eval()
    model = get_peft_model(base, plugin.MPLoraConfig(r=4, num_paths=3, init_weights=False, fan_in_fan_out=True,
                                                     target_modules=["c_attn", "c_fc"]))
    ids = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        expected = model(ids).logits
        torch.testing.assert_close(model.merge_and_unload()(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_num_paths_larger_than_d_out_is_a_clear_error():
    with pytest.raises(ValueError, match=r"num_paths=40 must be between 1 and the layer's output size d_out=16"):
        get_peft_model(tiny_llama(), plugin.MPLoraConfig(num_paths=40, target_modules=["k_proj"]))
    with pytest.raises(ValueError, match="num_paths must be a positive integer"):
        plugin.MPLoraConfig(num_paths=0)


def test_paper_parameter_count_roberta_base_qv_r8():
    from transformers import RobertaConfig, RobertaModel

    with torch.device("meta"):
        base = RobertaModel(RobertaConfig())  # roberta-base: 12 layers, hidden 768
    model = get_peft_model(base, plugin.MPLoraConfig(r=8, lora_alpha=16, num_paths=4,
                                                     target_modules=["query", "value"]))
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == 294_912
