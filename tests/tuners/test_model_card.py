"""``save_pretrained`` of each method writes a card that says what the adapter is and how to load it."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard
from peft import get_peft_model

from ..helpers import method_config, tiny_llama


@pytest.mark.parametrize("method, name, merge", [("mplora", "MPLoRA", "exact (`merge_and_unload()`"),
                                                 ("mor", "MoR", "MoR cannot be merged"),
                                                 ("loratrf_output", "LoRATRF", "LoRATRF cannot be merged")])
def test_card_names_the_method_and_how_to_load_it(tmp_path, method, name, merge):
    model = get_peft_model(tiny_llama(), method_config(method, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "peft"  # PEFT's own metadata is kept
    assert {name.lower(), "plugin"} <= set(card.data.tags)
    assert f"## {name} adapter" in card.text and "import plugin" in card.text and merge in card.text


def test_a_users_card_is_kept_and_the_section_written_once(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# Ours\n\nWhat we trained and why.\n")
    model = get_peft_model(tiny_llama(), method_config("mor", target_modules=["q_proj"]))
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "mit" and "What we trained and why." in card.text
    assert card.text.count("## MoR adapter") == 1
