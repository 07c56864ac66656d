"""One base holding MoR, LoRATRF, MPLoRA and LoRA adapters: a mixed batch equals each adapter run alone through
plain PEFT (``PeftModel.from_pretrained``), and the base rows equal the bare model."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from plugin.models.multi_adapter import MultiAdapterModel
from plugin.utils.errors import UserError

from ..helpers import method_config, save_adapters

ADAPTERS = {  # overlapping targets: q_proj carries all four methods at once
    "mor": lambda: method_config("mor", target_modules=["q_proj", "v_proj", "up_proj"]),
    "trf": lambda: method_config("loratrf_output", target_modules=["q_proj", "down_proj"]),
    "mp": lambda: method_config("mplora", target_modules=["q_proj", "v_proj"]),
    "lora": lambda: LoraConfig(r=4, target_modules=["q_proj", "up_proj"], init_lora_weights=False),
}


@pytest.fixture(scope="module")
def folders(tiny_model_dir, tmp_path_factory):
    return save_adapters(tiny_model_dir, tmp_path_factory.mktemp("multi"), ADAPTERS)


def _alone(tiny_model_dir, folder, ids):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, folder) if folder else base
    with torch.no_grad():
        return model.eval()(ids).logits


def test_a_mixed_batch_equals_each_adapter_alone(tiny_model_dir, folders):
    multi = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    for name in ADAPTERS:
        multi.add(name, folders / name)
    names = ["lora", "__base__", "mor", "trf", "mp", "mor"]
    ids = torch.randint(3, 200, (len(names), 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), multi.routed(names):
        mixed = multi.base(ids).logits
    bare = _alone(tiny_model_dir, None, ids)
    for row, name in enumerate(names):
        alone = _alone(tiny_model_dir, None if name == "__base__" else folders / name, ids[row: row + 1])
        torch.testing.assert_close(mixed[row: row + 1], alone, atol=1e-5, rtol=1e-5)
        if name != "__base__":
            assert (alone - bare[row]).abs().max() > 1e-3  # the adapter changes the output
    with pytest.raises(ValueError, match="non-existing adapter.*: nope"), multi.routed(["nope"]):
        pass


def test_removed_adapters_leave_the_others(tiny_model_dir, folders):
    multi = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    multi.add("mor", folders / "mor")
    multi.add("mp", folders / "mp")
    multi.remove("mor")
    ids = torch.randint(3, 200, (1, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), multi.routed(["mp"]):
        torch.testing.assert_close(multi.base(ids).logits, _alone(tiny_model_dir, folders / "mp", ids))


def test_an_adapter_for_another_base_is_one_line(tiny_model_dir, folders, tmp_path):
    from ..helpers import tiny_llama

    other = tiny_llama(hidden_size=32)  # another width than tiny_model_dir's
    get_peft_model(other, ADAPTERS["mor"]()).save_pretrained(tmp_path / "other")
    multi = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    with pytest.raises(UserError, match="does not fit the base model"):
        multi.add("other", tmp_path / "other")
    assert multi.adapters == {}


def test_an_adapter_that_changed_its_base_cannot_share_it(tiny_model_dir, tmp_path):
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   method_config("mor", target_modules=["q_proj"], init_weights="pissa")).save_pretrained(tmp_path / "p")
    multi = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    with pytest.raises(UserError, match="initialised with pissa, which changes the base weights"):
        multi.add("p", tmp_path / "p")


def test_an_experts_adapter_cannot_share_a_base(tmp_path):
    from transformers import MixtralConfig, MixtralForCausalLM

    def mixtral():
        torch.manual_seed(0)
        return MixtralForCausalLM(MixtralConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                                vocab_size=100, num_attention_heads=2, num_key_value_heads=2,
                                                num_local_experts=2))

    get_peft_model(mixtral(), method_config("mplora", num_paths=2, target_modules=["q_proj"],
                                            target_parameters=["mlp.experts.down_proj"])).save_pretrained(tmp_path / "e")
    multi = MultiAdapterModel(mixtral())
    with pytest.raises(UserError, match=r"adapts raw parameters \(mlp.experts.down_proj\), whose modules mix every "
                                        "row's tokens"):
        multi.add("e", tmp_path / "e")
    assert multi.adapters == {}
