"""``init_weights`` takes LoRA's choices that the methods' math allows (True, False, 'gaussian', 'pissa',
'pissa_niter_K', 'olora'); any other value, e.g. LoRA's 'loftq', is refused naming the choices rather than silently
giving the default init. PiSSA / OLoRA are checked against independent references: the output at init equals the
base model's, s B A is W's principal part (SVD / QR computed here), and a trained adapter reloads onto the original
base with the same logits, however its SVD comes out there."""

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


@pytest.mark.parametrize("value", ["loftq", "eva", "pissa_niter_", "pissa_niter_0", 1.5])
def test_other_inits_are_refused_naming_the_choices(value):
    with pytest.raises(ValueError, match="init_weights must be True, False, 'gaussian', 'pissa', 'pissa_niter_K' or "
                                         "'olora'"):
        method_config("mor", init_weights=value)


PRINCIPAL = ["pissa", "pissa_niter_4", "olora"]
TARGETS = ["q_proj", "v_proj", "up_proj"]
PRINCIPAL_METHODS = ["mplora", "mor", "loratrf_output"]


@pytest.mark.parametrize("init", PRINCIPAL)
@pytest.mark.parametrize("method", PRINCIPAL_METHODS)
def test_principal_inits_keep_the_output_and_move_w_into_the_adapter(method, init, tokens):
    base = tiny_llama()
    w = base.model.layers[0].mlp.up_proj.weight.detach().clone()
    with torch.no_grad():
        expected = base(tokens).logits
    model = get_peft_model(base, method_config(method, init_weights=init, target_modules=TARGETS)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, expected, atol=1e-5, rtol=1e-5)
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    s, r = layer.scaling["default"], layer.r["default"]
    update = s * layer.lora_B_dict["default"].weight @ layer.lora_A_dict["default"].weight
    if init == "olora":  # LoRA's OLoRA: B = Q_r, A = R_r, and the base keeps W - s Q_r R_r
        q, upper = torch.linalg.qr(w)
        principal = s * q[:, :r] @ upper[:r]
    else:  # the best rank-r approximation (Eckart-Young)
        u, values, vh = torch.linalg.svd(w, full_matrices=False)
        principal = u[:, :r] * values[:r] @ vh[:r]
    if init == "pissa_niter_4":  # randomised: a rank-r approximation nearly as good as the best
        assert torch.linalg.matrix_rank(update) == r
        assert (w - update).norm() <= 1.05 * (w - principal).norm()
    else:
        torch.testing.assert_close(update, principal, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer.get_base_layer().weight + update, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("init", PRINCIPAL)
@pytest.mark.parametrize("method", PRINCIPAL_METHODS)
def test_a_trained_principal_adapter_reloads_onto_the_original_base(tmp_path, method, init, tokens):
    from peft import PeftModel

    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(), method_config(method, init_weights=init, target_modules=TARGETS)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # "training"
                p.add_(0.02 * torch.randn_like(p))
        trained = model(tokens).logits
    model.save_pretrained(tmp_path)
    torch.manual_seed(123)  # another random state: the randomised SVD comes out otherwise on reload
    reloaded = PeftModel.from_pretrained(tiny_llama(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(tokens).logits, trained, atol=1e-5, rtol=1e-5)
    if method == "mplora":  # merging gives the trained model as plain weights
        with torch.no_grad():
            torch.testing.assert_close(reloaded.merge_and_unload()(tokens).logits, trained, atol=1e-5, rtol=1e-5)


def test_principal_inits_refuse_what_the_math_does_not_allow():
    with pytest.raises(ValueError, match="trf_mode 'input' gates it"):
        get_peft_model(tiny_llama(), method_config("loratrf_input", init_weights="pissa", target_modules=TARGETS))
