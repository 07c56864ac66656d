"""What adding a method takes (docs/architecture.md): a config, layer and model over ``tuners.base`` and one
``register_method`` line. A throw-away method defined here gets its YAML keys, validation in the YAML's names,
``--help`` lines, the docs table, the YAML -> PEFT mapping and PEFT's save/load without touching the package."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from peft import PeftModel, get_peft_model

from plugin.config import load_config, to_dict
from plugin.config.method_keys import method_keys
from plugin.config.peft_mapping import peft_config_from_keys
from plugin.config.reference import help_text, markdown
from plugin.tuners import METHODS, register_method
from plugin.tuners.base import LowRankConfig, LowRankLayer, LowRankModel
from plugin.utils.errors import UserError

from ..helpers import tiny_llama


@dataclass
class GainConfig(LowRankConfig):
    """LoRA with a fixed extra gain on the update (a stand-in for a fourth method)."""

    gn_gain: float = field(default=2.0, metadata={"help": "Factor on the low-rank update."})

    _peft_type_name = "GAINLORA"
    _field_prefix = "gn_"

    def __post_init__(self):
        super().__post_init__()
        if self.gn_gain <= 0:
            raise ValueError(f"gn_gain must be > 0, got {self.gn_gain!r}")


class GainLayer(LowRankLayer):
    prefix = "gain_"
    adapter_layer_names = ("gain_A", "gain_B")
    other_param_names = LowRankLayer.other_param_names + ("gain",)

    def create_method_params(self, adapter_name, config):
        self.gain[adapter_name] = config.gn_gain

    def _adapter_output(self, adapter_name, x, result):
        z = self.low_rank(adapter_name, x) * self.scaling[adapter_name] * self.gain[adapter_name]
        return result + self.gain_B[adapter_name](z).to(result.dtype)


class GainModel(LowRankModel):
    prefix = "gain_"
    tuner_layer_cls = GainLayer
    target_module_mapping = {"llama": ["q_proj", "v_proj"]}


@pytest.fixture
def gain_method():
    register_method("gainlora", GainConfig, GainModel)  # the one registration line
    yield
    del METHODS["gainlora"]


def test_a_new_method_is_wired_through_everything(gain_method, base_cfg, tmp_path, tokens):
    assert method_keys()["gainlora_gain"].default == 2.0
    cfg = load_config(None, {**base_cfg, "adapter": "gainlora", "gainlora_gain": 3})
    assert cfg.method_value("gainlora_gain") == 3.0 and to_dict(cfg)["gainlora_gain"] == 3.0
    with pytest.raises(UserError, match="gainlora_gain must be > 0, got -1"):
        load_config(None, {**base_cfg, "adapter": "gainlora", "gainlora_gain": -1})
    with pytest.raises(UserError, match="gainlora_gain is set but adapter is 'mor'; set adapter: gainlora"):
        load_config(None, {**base_cfg, "gainlora_gain": 3})
    assert "gainlora_gain" in help_text() and "| `gainlora_gain` | a number | `2.0` |" in markdown()

    config = peft_config_from_keys(to_dict(cfg))
    assert isinstance(config, GainConfig) and config.gn_gain == 3.0 and config.r == 4
    base = tiny_llama()
    with torch.no_grad():
        expected = base(tokens).logits
    model = get_peft_model(base, GainConfig(r=4, gn_gain=3.0, target_modules=["q_proj"], init_weights=False))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 32)
    a, b = layer.gain_A["default"].weight, layer.gain_B["default"].weight
    assert layer.scaling["default"] == 16 / 4  # the shared lora_alpha default over r
    reference = layer.get_base_layer()(x) + 3.0 * 4.0 * x @ a.T @ b.T  # W x + gain * s * B A x
    assert torch.allclose(layer(x), reference, atol=1e-6)
    with torch.no_grad(), model.disable_adapter():
        assert torch.allclose(model(tokens).logits, expected)
    model.save_pretrained(tmp_path / "gain")
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path / "gain")
    assert isinstance(loaded.peft_config["default"], GainConfig) and loaded.peft_config["default"].gn_gain == 3.0
    with torch.no_grad():
        assert torch.allclose(loaded(tokens).logits, model(tokens).logits, atol=1e-6)


def test_a_new_method_reaches_axolotls_config_validation(gain_method):
    pytest.importorskip("axolotl")
    from plugin.integrations.axolotl import _args_model

    args = _args_model()
    assert args(gainlora_gain=3).gainlora_gain == 3.0 and args().gainlora_gain is None  # unset: the method default
