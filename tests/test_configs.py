"""Every shipped YAML validates against the schema (catches typos in configs/ before a user does)."""

from pathlib import Path

import pytest

from plugin.config import load_config

CONFIGS = sorted(p for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml")
                 if not p.name.startswith("study_"))  # study configs: tests/test_study.py


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.datasets and cfg.output_dir.startswith("outputs/")


def test_paper_setups_match_the_papers():
    mor = load_config(CONFIGS[0].parent / "mor_tulu.yaml")
    assert (mor.lora_r, mor.lora_alpha, mor.lora_dropout, mor.mor_num_experts, mor.learning_rate) == (8, 32, 0.05, 8, 2e-4)
    assert mor.micro_batch_size * mor.gradient_accumulation_steps == 8 and mor.sequence_len == 1024
    trf = load_config(CONFIGS[0].parent / "loratrf_llama7b.yaml")
    assert trf.lora_r == 32 and trf.lora_target_modules == ["o_proj", "up_proj", "down_proj"]
