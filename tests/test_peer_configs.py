"""LLaMA-Factory's own example YAMLs and dataset registry (tests/fixtures/peer_configs/, verbatim) mean here what
they mean upstream."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plugin import chat_templates
from plugin.config import load_config

from .helpers import REPO, adapter_weights, write_yaml

LF = Path(__file__).resolve().parent / "fixtures" / "peer_configs" / "llamafactory"


@pytest.fixture
def in_lf_folder(monkeypatch):
    monkeypatch.chdir(LF)  # LLaMA-Factory resolves dataset_dir (default "data") from the working folder


def test_llamafactory_lora_example_means_what_upstream_means(in_lf_folder, capsys):
    cfg = load_config(LF / "qwen3_lora_sft.yaml", {"finetuning_type": "mor"})
    assert (cfg.base_model, cfg.adapter, cfg.lora_r, cfg.lora_target_modules) == (
        "Qwen/Qwen3-4B-Instruct-2507", "mor", 8, ["all-linear"])
    assert chat_templates.resolve(cfg.chat_template) == chat_templates.resolve("qwen3")
    assert [(Path(d.path).name, d.type, d.field_instruction, d.field_output, d.max_samples) for d in cfg.datasets] == [
        ("identity.json", "alpaca", "instruction", "output", 1000), ("alpaca_en_demo.json", "alpaca", "instruction", "output", 1000)]
    assert (cfg.sequence_len, cfg.micro_batch_size, cfg.gradient_accumulation_steps, cfg.learning_rate,
            cfg.num_epochs, cfg.warmup_ratio, cfg.bf16, cfg.trust_remote_code) == (2048, 1, 8, 1e-4, 3.0, 0.1, True, True)
    assert "note: ignoring keys that do not change training here: dataloader_num_workers, ddp_timeout" in capsys.readouterr().err


def test_llamafactory_qlora_example_loads_4bit(in_lf_folder):
    cfg = load_config(LF / "qwen3_lora_sft_otfq.yaml", {"finetuning_type": "mor"})
    assert cfg.load_in_4bit and not cfg.load_in_8bit


def test_sharegpt_registry_entry_maps_tags(tmp_path):
    import json

    from plugin.llamafactory import registry_datasets

    info = json.loads((LF / "data" / "dataset_info.json").read_text())
    (tmp_path / "dataset_info.json").write_text(json.dumps({"tools": info["glaive_toolcall_en_demo"]}))
    (tmp_path / "glaive_toolcall_en_demo.json").write_text("[]")
    (spec,) = registry_datasets("tools", str(tmp_path))
    assert spec["type"] == "sharegpt" and spec["field_messages"] == "conversations"
    assert spec["roles"]["assistant"] == ["gpt", "function_call"] and spec["roles"]["tool"] == ["observation"]


def test_llamafactory_example_trains_two_steps(tiny_model_dir, tmp_path):
    """Only the base model, the dataset folder and the adapter replaced (plus a CPU-sized run)."""
    import yaml

    keys = yaml.safe_load((LF / "qwen3_lora_sft.yaml").read_text())
    keys.update(model_name_or_path=str(tiny_model_dir), dataset_dir=str(LF / "data"), finetuning_type="mor",
                output_dir=str(tmp_path / "out"), max_steps=2, bf16=False, trust_remote_code=False,
                gradient_accumulation_steps=1, max_samples=8, cutoff_len=256)
    cfg = write_yaml(tmp_path / "lf.yaml", **keys)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "plugin.train", str(cfg)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights = adapter_weights(tmp_path / "out")
    assert any("mor_A" in k and "q_proj" in k for k in weights) and any("down_proj" in k for k in weights)


AX = Path(__file__).resolve().parent / "fixtures" / "peer_configs" / "axolotl"


def test_axolotl_instruct_lora_example_means_what_upstream_means(capsys):
    cfg = load_config(AX / "llama-3_instruct-lora-8b.yml", {"adapter": "mor"})
    assert (cfg.adapter, cfg.load_in_8bit, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == ("mor", True, 32, 16, 0.05)
    assert cfg.lora_target_modules == ["all-linear"]  # lora_target_linear: true
    assert chat_templates.resolve(cfg.chat_template) == chat_templates.resolve("llama3")
    assert (cfg.datasets[0].path, cfg.datasets[0].type) == ("fozziethebeat/alpaca_messages_2k_test", "chat_template")
    assert (cfg.evals_per_epoch, cfg.saves_per_epoch, cfg.val_set_size, cfg.optimizer) == (4, 1, 0.05, "adamw_bnb_8bit")
    assert cfg.special_tokens == {"pad_token": "<|end_of_text|>"} and cfg.attn_implementation == "flash_attention_2"
    assert "ignoring keys that do not change training here: model_type, tf32, tokenizer_type" in capsys.readouterr().err


def test_axolotl_qlora_example_trains_two_steps_as_mor(tiny_model_dir, tmp_path):
    """adapter: qlora -> mor on the same 4-bit base, sample packing, adamw_bnb_8bit, evals_per_epoch: only the base
    model, the data, the adapter, the llama-3 pad token (the tiny model's tokenizer lacks it) and the run length
    replaced."""
    cfg = load_config(AX / "llama-3_qlora-1b.yml", {"adapter": "mor"})
    assert (cfg.adapter, cfg.load_in_4bit, cfg.sample_packing) == ("mor", True, True)
    assert cfg.lora_target_modules == ["gate_proj", "down_proj", "up_proj", "q_proj", "v_proj", "k_proj", "o_proj"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    data = LF / "data" / "alpaca_en_demo.json"
    cmd = [sys.executable, "-m", "plugin.train", str(AX / "llama-3_qlora-1b.yml"), "--adapter", "mor",
           "--base_model", str(tiny_model_dir), "--datasets", f"[{{path: {data}, type: alpaca}}]",
           "--special_tokens", "{pad_token: '<|im_end|>'}", "--max_steps", "2", "--sequence_len", "512",
           "--output_dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any("mor_omega_B" in k for k in adapter_weights(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["peft_type"] == "MOR"
