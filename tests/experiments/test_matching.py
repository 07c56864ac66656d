"""Equal-budget LoRA: the counts and the matched rank, against the SPEC's parameter formulas and a real model."""

import pytest

from plugin.experiments.matching import adapter_parameter_count, matched_lora_keys
from plugin.utils.errors import UserError

from ..helpers import make_tiny_bert_dir

# tiny BERT: hidden 32, FFN 64, 2 layers; the FFN's two projections: 32 -> 64 and 64 -> 32
FFN = ["intermediate.dense", "output.dense"]  # output.dense also names attention's 32 -> 32 output projection
KEYS = {"task": "sequence_classification", "num_labels": 2, "lora_r": 4, "lora_alpha": 8,
        "lora_modules_to_save": ["pooler"], "lora_target_modules": FFN}
SHAPES = [(32, 64), (64, 32), (32, 32)] * 2  # (d_in, d_out) of each adapted layer


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return str(make_tiny_bert_dir(tmp_path_factory.mktemp("bert")))


def test_counts_follow_the_spec_formulas(bert):
    r, n = 4, 3
    lora = sum((i + o) * r for i, o in SHAPES)
    assert adapter_parameter_count(bert, {**KEYS, "adapter": "lora"}) == lora
    assert adapter_parameter_count(bert, {**KEYS, "adapter": "mplora", "mplora_num_paths": 2}) == lora
    mor = sum((i + o) * r + n * (i + o + r) for i, o in SHAPES)  # SPEC section 2
    assert adapter_parameter_count(bert, {**KEYS, "adapter": "mor", "mor_num_experts": n}) == mor
    # LoRATRF input mode: LoRA plus the task vector t (d_in); output mode: t (d_out) and T_B T_A of rank k = r
    trf_in = sum((i + o) * r + i for i, o in SHAPES)
    assert adapter_parameter_count(bert, {**KEYS, "adapter": "loratrf", "loratrf_mode": "input"}) == trf_in
    trf_out = sum((i + o) * r + o + 2 * o * r for i, o in SHAPES)
    assert adapter_parameter_count(bert, {**KEYS, "adapter": "loratrf", "loratrf_mode": "output"}) == trf_out


def test_matched_lora_trains_as_many_parameters_in_a_real_model(bert):
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    from plugin.config.peft_mapping import peft_config_from_keys

    target = adapter_parameter_count(bert, {**KEYS, "adapter": "loratrf", "loratrf_mode": "input"})
    keys = {**KEYS, "adapter": "lora", **matched_lora_keys(bert, KEYS, target, "run x")}
    assert keys["lora_r"] == 4 and keys["lora_rank_pattern"]  # 4.x ranks' worth: some layers one rank higher
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(bert, num_labels=2),
                           peft_config_from_keys(keys))
    trained = sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and "lora_" in name)
    assert abs(trained - target) <= 0.05 * target
    ranks = {module.r["default"] for module in model.modules() if hasattr(module, "lora_A")}
    assert ranks == {4, 5}


def test_no_lora_within_five_percent_is_one_line(bert):
    with pytest.raises(UserError, match="run x: no LoRA at these targets trains within 5% of 10 adapter"):
        matched_lora_keys(bert, KEYS, 10, "run x")
