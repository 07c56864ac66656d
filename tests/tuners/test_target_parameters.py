"""MPLoRA's ``target_parameters`` (LoRA's field): a MoE block's 3D expert tensors get a weight delta per expert,
s B_e A_e, and B_e's row blocks are the paths of the orthogonality loss. Each check against a reference built here:
the plain model with the deltas added by hand, the orthogonality formula per expert, merged = unmerged, a reload."""

from __future__ import annotations

import warnings

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import MixtralConfig, MixtralForCausalLM

import plugin
from plugin.tuners.auxiliary import aux_loss_terms

EXPERTS, R, PATHS = 4, 2, 2
TARGETS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def _mixtral() -> MixtralForCausalLM:
    torch.manual_seed(0)
    return MixtralForCausalLM(MixtralConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, vocab_size=100, num_attention_heads=2,
        num_key_value_heads=2, num_local_experts=EXPERTS, num_experts_per_tok=2)).eval()


def _adapted(**overrides):
    config = plugin.MPLoraConfig(r=R, lora_alpha=6, num_paths=PATHS, target_modules=[], target_parameters=TARGETS,
                                 init_weights=False, **overrides)
    return get_peft_model(_mixtral(), config)


def _factors(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{expert tensor name: (A: E*r x d_in, rows expert by expert; B: d_out x r*E, columns rank by rank)} as saved
    (PEFT's LoRA layout)."""
    state = model.state_dict()
    out = {}
    for key, a in state.items():
        if key.endswith("mplora_A.default.weight"):
            module = key.removesuffix(".mplora_A.default.weight")
            name = TARGETS[0] if module.endswith("experts.base_layer") else TARGETS[1]  # the inner wrapper is the first
            layer = module.split(".layers.")[1].split(".")[0]
            out[f"model.layers.{layer}.{name}"] = (a, state[f"{module}.mplora_B.default.weight"])
    return out


def test_each_expert_gets_its_weight_delta():
    model = _adapted()
    ids = torch.randint(0, 100, (2, 9))
    reference = _mixtral()
    with torch.no_grad():
        for name, (a, b) in _factors(model).items():
            weight = reference.get_parameter(name)  # experts x d_out x d_in
            for e in range(EXPERTS):
                weight[e] += (6 / R) * b.view(-1, R, EXPERTS)[:, :, e] @ a[e * R:(e + 1) * R]
    assert len(_factors(model)) == 4
    adapted = model(ids).logits
    assert (adapted - _mixtral()(ids).logits).abs().max() > 1e-4  # the adapter acts
    torch.testing.assert_close(adapted, reference(ids).logits, rtol=1e-5, atol=1e-6)


def test_orthogonality_loss_sums_each_experts_paths():
    model = _adapted().train()
    ids = torch.randint(0, 100, (2, 9))
    model(ids, labels=ids).loss.backward()
    expected = 0.0
    for _, b in _factors(model).values():
        for e in range(EXPERTS):
            blocks = b.view(-1, R, EXPERTS)[:, :, e].chunk(PATHS, dim=0)  # d_out even here: equal row blocks
            expected += sum((blocks[i].T @ blocks[j]).pow(2).sum() for i in range(PATHS) for j in range(i + 1, PATHS))
    got = aux_loss_terms(model)["default"]["orth_loss"]
    torch.testing.assert_close(got, expected.detach())
    grads = [p.grad for n, p in model.named_parameters() if "mplora_" in n]
    assert len(grads) == 8 and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_merge_is_exact_and_leaves_a_plain_model(tmp_path):
    model = _adapted()
    ids = torch.randint(0, 100, (2, 9))
    expected = model(ids).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(_mixtral(), tmp_path).eval()
    torch.testing.assert_close(reloaded(ids).logits, expected)
    merged = model.merge_and_unload()
    assert type(merged.model.layers[0].mlp.experts).__name__ == "MixtralExperts"
    torch.testing.assert_close(merged(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_adapted_experts_are_not_warned_about_and_the_rest_are():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _adapted()
        get_peft_model(_mixtral(), plugin.MPLoraConfig(r=R, target_modules=[], target_parameters=TARGETS[:1]))
    said = [str(w.message) for w in caught if "routed-expert" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("2 routed-expert weight tensors (e.g. "
                                                 "model.layers.0.mlp.experts.down_proj)")


def test_what_a_weight_delta_cannot_do_is_refused():
    with pytest.raises(ValueError, match="target_parameters needs lora_dropout: 0"):
        _adapted(lora_dropout=0.1)
    model = _adapted().eval()
    with pytest.raises(ValueError, match="add_weighted_adapter does not combine adapters on raw parameters"):
        model.add_weighted_adapter(["default"], [1.0], "sum")
    with pytest.raises(ValueError, match="mixed-adapter batches .* not supported on target_parameters"):
        model(torch.randint(0, 100, (2, 5)), adapter_names=["default", "__base__"])


def test_the_yaml_key_reaches_the_config():
    from plugin.config.loader import load_config
    from plugin.config.peft_mapping import build_peft_config

    cfg = load_config(None, {"datasets": [{"path": "data.jsonl"}], "adapter": "mplora",
                             "lora_target_parameters": TARGETS, "lora_target_modules": ["q_proj"]})
    assert build_peft_config(cfg).target_parameters == TARGETS
