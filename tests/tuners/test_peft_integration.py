"""The three methods behave like PEFT's own tuners: save/load in a fresh process, named adapters, 4-bit bases."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import get_peft_model

import plugin
from plugin.tuners.auxiliary import adapter_layers

from ..helpers import QUANTIZABLE_WIDTH, REPO, method_config, tiny_llama

CONFIGS = {
    "mplora": lambda: method_config("mplora", orth_weight=0.2, orth_start_step=5),
    "mor": lambda: method_config("mor", router_aux_loss_coef=0.01),
    "loratrf": lambda: method_config("loratrf_output", trf_rank=2),
    "loratrf_input": lambda: method_config("loratrf_input"),
}
METHOD_FIELDS = {
    "mplora": {"peft_type": "MPLORA", "num_paths": 3, "orth_weight": 0.2, "orth_start_step": 5},
    "mor": {"peft_type": "MOR", "num_experts": 3, "router_aux_loss_coef": 0.01, "router_init_std": 0.02},
    "loratrf": {"peft_type": "LORATRF", "trf_rank": 2, "trf_mode": "output"},
    "loratrf_input": {"peft_type": "LORATRF", "trf_rank": 4, "trf_mode": "input"},
}

LOAD_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    import plugin
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    root = sys.argv[1]
    ids = torch.load(f"{root}/ids.pt")
    for method in sys.argv[2:]:
        base = AutoModelForCausalLM.from_pretrained(f"{root}/base").eval()
        model = PeftModel.from_pretrained(base, f"{root}/{method}").eval()
        with torch.no_grad():
            torch.save(model(ids).logits, f"{root}/{method}.pt")
        print(method, type(model.base_model).__name__)
    """
)


@pytest.fixture(scope="module")
def saved_and_reloaded(tmp_path_factory):
    """Each method's adapter saved here and loaded back in one fresh process (``import plugin``, then PEFT's
    ``PeftModel.from_pretrained``): per method the saved config, the logits before saving and those after loading."""
    root = tmp_path_factory.mktemp("fresh_process")
    base = tiny_llama()
    base.save_pretrained(root / "base")
    ids = torch.randint(0, base.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))
    torch.save(ids, root / "ids.pt")
    before, own_class = {}, {}
    for method, config in CONFIGS.items():
        model = get_peft_model(tiny_llama(), config()).eval()  # from_pretrained loads for inference: eval mode
        with torch.no_grad():
            before[method] = model(ids).logits
        own_class[method] = type(model.base_model).__name__
        model.save_pretrained(root / method)
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(root), *CONFIGS], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    classes = dict(line.split() for line in proc.stdout.splitlines() if line.split()[:1] and line.split()[0] in CONFIGS)
    return {method: (json.loads((root / method / "adapter_config.json").read_text()), before[method],
                     torch.load(root / f"{method}.pt"), classes.get(method), own_class[method])
            for method in CONFIGS}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(CONFIGS))
def test_save_then_load_in_fresh_process_is_bit_identical(saved_and_reloaded, method):
    saved, expected, loaded, loaded_class, own_class = saved_and_reloaded[method]
    for key, value in METHOD_FIELDS[method].items():
        assert saved[key] == value
    assert loaded_class == own_class
    assert torch.equal(loaded, expected)


@pytest.mark.slow
def test_loading_without_import_plugin_is_an_error_not_lora(tmp_path):
    get_peft_model(tiny_llama(), CONFIGS["mor"]()).save_pretrained(tmp_path)
    script = "from peft import PeftConfig; import sys; PeftConfig.from_pretrained(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", script, tmp_path], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "MOR" in proc.stderr


def test_loaded_config_is_our_class(tmp_path):
    get_peft_model(tiny_llama(), CONFIGS["mplora"]()).save_pretrained(tmp_path)
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(tmp_path)
    assert type(config) is plugin.MPLoraConfig and config.num_paths == 3


@pytest.mark.parametrize("method", ["mplora", "mor", "loratrf"])
def test_gradients_reach_exactly_the_adapter_parameters(tokens, method):
    model = get_peft_model(tiny_llama(), CONFIGS[method]()).train()
    out = model(tokens, labels=tokens)
    aux, _ = plugin.weighted_aux_loss(model, step=10)
    (out.loss + (aux if aux is not None else 0)).backward()
    for name, p in model.named_parameters():
        is_adapter = f"{model.base_model.prefix}" in name
        assert p.requires_grad == is_adapter, name
        if is_adapter:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_named_adapters_set_disable_delete(tokens):
    base = tiny_llama()
    with torch.no_grad():
        base_logits = base(tokens).logits
    model = get_peft_model(base, CONFIGS["mor"](), adapter_name="a")
    model.add_adapter("b", plugin.MoRConfig(r=2, num_experts=2, init_weights=False))
    with torch.no_grad():
        out_a = model(tokens).logits
        model.set_adapter("b")
        out_b = model(tokens).logits
        with model.disable_adapter():
            torch.testing.assert_close(model(tokens).logits, base_logits)
    assert not torch.allclose(out_a, out_b)
    assert all(p.requires_grad == (".b" in n) for n, p in model.named_parameters() if "mor_" in n)
    model.delete_adapter("a")
    assert list(model.peft_config) == ["b"]
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    for attr in layer.adapter_layer_names + layer.other_param_names:
        assert "a" not in getattr(layer, attr), attr


def test_print_trainable_parameters_and_modules_to_save(capsys):
    model = get_peft_model(tiny_llama(), plugin.MPLoraConfig(r=4, modules_to_save=["lm_head"]))
    model.print_trainable_parameters()
    assert "trainable params:" in capsys.readouterr().out
    assert any("modules_to_save" in n and p.requires_grad for n, p in model.named_parameters())


def test_bad_target_module_is_a_clear_error():
    with pytest.raises(ValueError, match="not_a_layer"):
        get_peft_model(tiny_llama(), plugin.MoRConfig(target_modules=["not_a_layer"]))


def test_register_is_idempotent():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    plugin.register()
    plugin.register()
    assert PEFT_TYPE_TO_CONFIG_MAPPING["MOR"] is plugin.MoRConfig
    assert plugin.MoRConfig().peft_type == "MOR"


# ---- quantized backbones ----------------------------------------------------------------------------------
bnb = pytest.importorskip("bitsandbytes")


def _quantized_llama(tmp_path, **quant):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    tiny_llama(hidden_size=QUANTIZABLE_WIDTH, intermediate_size=2 * QUANTIZABLE_WIDTH).save_pretrained(tmp_path)
    return AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=BitsAndBytesConfig(**quant))


@pytest.mark.parametrize("method", ["mplora", "mor", "loratrf"])
def test_4bit_backbone_trains_adapter_only(tmp_path, tokens, method):
    base = _quantized_llama(tmp_path, load_in_4bit=True, bnb_4bit_quant_type="nf4",
                            bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    model = get_peft_model(base, CONFIGS[method]())
    _, layer = next(adapter_layers(model))
    assert isinstance(layer.get_base_layer(), bnb.nn.Linear4bit)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)
    model(tokens)  # bitsandbytes repacks 4-bit weights for the CPU on the first forward: snapshot after it
    packed = layer.get_base_layer().weight.detach().numpy().tobytes()
    out = model(tokens, labels=tokens)
    out.loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    model(tokens)
    assert out.logits.dtype in (torch.bfloat16, torch.float32) and torch.isfinite(out.loss)
    assert layer.lora_A_dict["default"].weight.grad is not None
    base_weight = layer.get_base_layer().weight
    assert not base_weight.requires_grad and base_weight.grad is None
    assert base_weight.detach().numpy().tobytes() == packed  # base stays quantized and untouched
    if method == "mplora":
        with pytest.raises(ValueError, match="merging into a quantized"):
            model.merge_and_unload()


def test_8bit_backbone_forward_backward(tmp_path, tokens):
    base = _quantized_llama(tmp_path, load_in_8bit=True)
    model = get_peft_model(base, CONFIGS["mor"]())
    assert isinstance(model.base_model.model.model.layers[0].mlp.up_proj.get_base_layer(), bnb.nn.Linear8bitLt)
    model(tokens, labels=tokens).loss.backward()
    assert model.base_model.model.model.layers[0].mlp.up_proj.mor_router["default"].weight.grad is not None


def test_bf16_inputs_cast_in_and_out(tokens):
    model = get_peft_model(tiny_llama().to(torch.bfloat16), CONFIGS["loratrf"]())
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "trf_" in n)
    with torch.no_grad():
        assert model(tokens).logits.dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["mor", "loratrf", "loratrf_input"])
def test_adapters_saved_by_0_1_0_load_completely(name, recwarn):
    """0.1.0 stored MoR's Omegas and LoRATRF's task vector as bare parameters (``...mor_omega_A``); they are now
    modules' weights (``...mor_omega_A.weight``, what FSDP and ZeRO-3 need). Old files load with every tensor."""
    from safetensors.torch import load_file

    from plugin.models.adapter_io import load_adapter_strict, read_adapter_config, read_adapter_weights

    folder = REPO / "tests" / "fixtures" / "adapters_0.1.0" / name
    base = tiny_llama(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1)
    model = load_adapter_strict(base, str(folder), read_adapter_config(folder), read_adapter_weights(folder))
    assert not [w for w in recwarn if "missing adapter keys" in str(w.message)]
    params = dict(model.named_parameters())
    saved = load_file(str(folder / "adapter_model.safetensors"))
    assert any(not k.endswith(".weight") for k in saved)  # the fixture really has the old layout
    for key, tensor in saved.items():
        stem = key.removesuffix(".weight")
        assert torch.equal(params[f"{stem}.default.weight"], tensor), key
