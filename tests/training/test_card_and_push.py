"""What a ``plugin.train`` output tells whoever downloads it (the model card), and ``hub_model_id`` pushing it to a
real local hub server (tests/hub_server.py) through ``HF_ENDPOINT``."""

from __future__ import annotations

import pytest
import os
import subprocess
import sys

from plugin.config import load_config
from plugin.training.card import add_eval_section

from ..helpers import one_error_line, write_yaml
from ..hub_server import LocalHub


@pytest.mark.slow
def test_train_pushes_the_adapter_with_its_card(tmp_path, base_cfg):
    with LocalHub() as hub:
        cfg = write_yaml(tmp_path / "train.yaml", **base_cfg, hub_model_id="alice/tiny-mor", hub_private_repo=True)
        env = {**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}, "HF_ENDPOINT": hub.url,
               "HF_TOKEN": hub.token}
        proc = subprocess.run([sys.executable, "-m", "plugin.train", str(cfg)], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        pushed = hub.repos["alice/tiny-mor"]
        assert hub.server.visibility["alice/tiny-mor"] == "private"
    out = tmp_path / "out"
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", "resolved_config.yaml"):
        assert pushed[name] == (out / name).read_bytes()
    assert not any(name.startswith("checkpoint-") for name in pushed)
    card = (out / "README.md").read_text()
    assert card.index("## MoR adapter") < card.index("## Training")  # what it is first, then how it was made
    assert "| lora_r | `4` |" in card and "| mor_num_experts | `8` |" in card
    assert "final training loss" in card and "import plugin" in card and "MoR cannot be merged" in card


def test_push_settings_are_checked_before_training(tmp_path, base_cfg, capsys):
    from plugin.train import main

    cfg = write_yaml(tmp_path / "train.yaml", **{**base_cfg, "push_to_hub": True})
    assert one_error_line(capsys, lambda: main([str(cfg)])) == (
        "error: push_to_hub: true needs hub_model_id: owner/name (the hub repo to push the adapter to)")
    cfg = write_yaml(tmp_path / "train.yaml", **{**base_cfg, "hub_model_id": "alice"})
    assert one_error_line(capsys, lambda: main([str(cfg)])).startswith("error: hub repo 'alice': give it as owner/name")
    cfg = write_yaml(tmp_path / "train.yaml", **{**base_cfg, "hub_model_id": "alice/x"})
    assert one_error_line(capsys, lambda: main([str(cfg)])).startswith(  # the suite runs with HF_HUB_OFFLINE=1
        "error: pushing to alice/x needs the hub, but HF_HUB_OFFLINE is set: unset it, or push later")
    assert not (tmp_path / "out").exists()


def test_eval_scores_join_the_card_in_place(tmp_path):
    (tmp_path / "README.md").write_text("# My adapter\n\nNotes I wrote myself.\n")
    report = {"lm_eval_version": "0.4.11", "limit": 10,
              "rows": [{"task": "arc_easy", "metric": "acc", "value": 0.5, "stderr": 0.1, "n": 10}]}
    add_eval_section(tmp_path, report)
    add_eval_section(tmp_path, {**report, "rows": [{**report["rows"][0], "value": 0.75}]})
    card = (tmp_path / "README.md").read_text()
    assert "Notes I wrote myself." in card
    assert card.count("## Evaluation") == 1 and "| arc_easy | acc | 0.7500 |" in card and "0.5000" not in card


def test_loaded_config_keeps_the_hub_keys(tmp_path, base_cfg):
    cfg = load_config(write_yaml(tmp_path / "t.yaml", **base_cfg, hub_model_id="alice/x", push_to_hub=True))
    assert (cfg.hub_model_id, cfg.push_to_hub, cfg.hub_private_repo) == ("alice/x", True, False)
