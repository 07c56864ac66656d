"""A real ``axolotl train`` with our plugin, for each adapter, in Axolotl's own environment.

Runs on Axolotl's stack, where CI runs it (``bash scripts/setup_axolotl.sh``, then ``.venv-axolotl/bin/python -m
pytest tests/integration``; docs/axolotl.md); skipped in the main environment, which lacks Axolotl.
"""

import importlib
import importlib.util
import json
import os
import subprocess

import pytest
import yaml

from ..helpers import REPO

VENV = REPO / ".venv-axolotl"
PEER = REPO / "tests" / "fixtures" / "peer_configs"
pytestmark = [pytest.mark.slow, pytest.mark.axolotl, pytest.mark.skipif(
    importlib.util.find_spec("axolotl") is None or not (VENV / "bin" / "axolotl").exists(),
    reason="runs on Axolotl's stack: bash scripts/setup_axolotl.sh && .venv-axolotl/bin/python -m pytest "
           "tests/integration")]

METHOD_KEYS = {
    # reentrant checkpointing (Axolotl's default without kwargs, and asked for here) would run the forward without
    # gradients and drop the auxiliary losses' (plugin.weighted_aux_loss stops); the plugin must switch it off
    "mplora": {"lora_target_modules": ["q_proj", "v_proj"], "mplora_num_paths": 2, "mplora_orth_weight": 1.0,
               "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": True}},
    "mor": {"lora_target_modules": ["gate_proj", "up_proj", "down_proj"], "mor_num_experts": 3,
            "mor_router_aux_loss_coef": 0.01, "gradient_checkpointing": True},
    "loratrf": {"lora_target_modules": ["o_proj", "up_proj", "down_proj"], "loratrf_mode": "output",
                "loratrf_task_vector_init": "input_mean"},
}
LOGGED_TERM = {"mplora": "orth_loss", "mor": "router_balance_loss"}


def _env():
    return {**os.environ, "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}", "DO_NOT_TRACK": "1",
            "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _axolotl_yaml(tmp_path, tiny_model_dir, chat_file, adapter):
    cfg = {
        "base_model": str(tiny_model_dir),
        "plugins": ["plugin.integrations.axolotl.LoRAVariantsPlugin"],
        "adapter": adapter, "lora_r": 4, "lora_alpha": 8, **METHOD_KEYS[adapter],
        "datasets": [{"path": str(chat_file), "ds_type": "json", "type": "chat_template",
                      "field_messages": "messages"}],
        "chat_template": "tokenizer_default", "sequence_len": 256,  # shorter drops every row (SPEC.md)
        "micro_batch_size": 2, "gradient_accumulation_steps": 1, "max_steps": 3, "learning_rate": 0.001,
        "optimizer": "adamw_torch", "logging_steps": 1, "save_steps": 100, "val_set_size": 0,
        "bf16": False, "fp16": False, "tf32": False,
        "output_dir": str(tmp_path / "out"), "dataset_prepared_path": str(tmp_path / "prepared"),
    }
    path = tmp_path / "axolotl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("adapter", list(METHOD_KEYS))
def test_axolotl_train_with_our_plugin(tmp_path, tiny_model_dir, chat_file, adapter):
    cfg = _axolotl_yaml(tmp_path, tiny_model_dir, chat_file, adapter)
    proc = subprocess.run(["axolotl", "train", str(cfg)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["peft_type"] == adapter.upper()
    if adapter == "loratrf":  # the plugin set the task vectors before the first step, as plugin.train does
        assert "LoRATRF: 6 task vectors set to the mean gate input of the first 2 rows" in proc.stdout + proc.stderr
    if adapter in LOGGED_TERM:  # aux term in Axolotl's logs, per-layer telemetry beside the adapter
        assert f"'{LOGGED_TERM[adapter]}'" in proc.stdout + proc.stderr
        assert (out / "telemetry.jsonl").is_file()
    if adapter == "mplora":  # the asked-for reentrant checkpointing is run non-reentrant, with a note
        assert "use_reentrant: true is run as use_reentrant: false" in proc.stderr
    # the adapter trained under Axolotl's pinned PEFT loads in Axolotl's environment (this test's own)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    assert type(loaded.base_model).__name__ == {"mplora": "MPLoraModel", "mor": "MoRModel",
                                                "loratrf": "LoRATRFModel"}[adapter]


def test_plugin_args_validate_through_axolotl():
    """Our keys go through Axolotl's own pydantic validation, bad values are rejected there."""
    import pydantic
    from axolotl.integrations.base import BasePlugin

    from plugin.integrations.axolotl import LoRAVariantsArgs, LoRAVariantsPlugin

    plugin = LoRAVariantsPlugin()
    assert isinstance(plugin, BasePlugin)
    module, _, cls = plugin.get_input_args().rpartition(".")
    assert getattr(importlib.import_module(module), cls) is LoRAVariantsArgs
    assert [c.name for c in plugin.get_adapter_capabilities()] == ["mplora", "mor", "loratrf"]
    assert LoRAVariantsArgs(mor_num_experts=4).mor_num_experts == 4
    with pytest.raises(pydantic.ValidationError, match="loratrf_mode"):
        LoRAVariantsArgs(loratrf_mode="sideways")


# Axolotl's own example YAMLs (verbatim in tests/fixtures/peer_configs/axolotl): replaced are the base model, the
# data, the adapter (+ our plugin line), and what this CPU machine and the tiny model's tokenizer lack: FlashAttention,
# the llama-3 pad token, and packed rows of thousands of tokens (512 here: the same code path, a CPU-sized step)
UPSTREAM_EXAMPLES = {
    "llama-3_qlora-1b.yml": [{"path": str(PEER / "llamafactory" / "data" / "alpaca_en_demo.json"), "ds_type": "json",
                              "type": "alpaca"}],
    "llama-3_instruct-lora-8b.yml": [{"path": str(REPO / "data" / "demo" / "commonsense_chat.jsonl"),
                                      "ds_type": "json", "type": "chat_template"}],
}


@pytest.mark.parametrize("example", list(UPSTREAM_EXAMPLES))
def test_axolotl_example_yaml_trains_with_mor(tmp_path, tiny_model_dir, example):
    cfg = yaml.safe_load((PEER / "axolotl" / example).read_text())
    cfg.update(base_model=str(tiny_model_dir), datasets=UPSTREAM_EXAMPLES[example], adapter="mor",
               plugins=["plugin.integrations.axolotl.LoRAVariantsPlugin"], attn_implementation="sdpa",
               special_tokens={"pad_token": "<|im_end|>"}, max_steps=2, sequence_len=512,
               output_dir=str(tmp_path / "out"),
               dataset_prepared_path=str(tmp_path / "prepared"))
    path = tmp_path / "example.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(["axolotl", "train", str(path)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "MOR" and saved["r"] == 32


def _saved_adapter(tmp_path, tiny_model_dir, adapter):
    """An adapter saved in Axolotl's environment with non-zero B (init_weights=False), so a merge that drops it
    shows."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from plugin.tuners import METHODS

    config = METHODS[adapter][0](r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                 init_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_axolotl_merge_lora_merges_mplora_exactly(tmp_path, tiny_model_dir, chat_file):
    """`axolotl merge-lora` with our plugin: the merged folder loads without plugin and equals the unmerged adapter
    (Axolotl's default merge would have matched no lora_A / lora_B tensor and saved the base unchanged)."""
    adapter = _saved_adapter(tmp_path, tiny_model_dir, "mplora")
    cfg = _axolotl_yaml(tmp_path, tiny_model_dir, chat_file, "mplora")
    proc = subprocess.run(["axolotl", "merge-lora", str(cfg), f"--lora-model-dir={adapter}"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "merge_method: legacy" in proc.stderr
    compare = (
        "import sys, torch; from transformers import AutoModelForCausalLM\n"
        "ids = torch.tensor([[1, 5, 9, 30, 2, 7]])\n"
        "merged = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()(ids).logits\n"
        "base = AutoModelForCausalLM.from_pretrained(sys.argv[2]).eval()(ids).logits\n"
        "import plugin; from peft import PeftModel\n"
        "unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[2]), sys.argv[3]).eval()"
        "(ids).logits\n"
        "print((merged - unmerged).abs().max().item(), (base - unmerged).abs().max().item())\n"
    )
    # the merge runs in a process that never imported plugin until the unmerged reference is built
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", compare, str(tmp_path / "out" / "merged"),
                          str(tiny_model_dir), str(adapter)], env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    merged_gap, base_gap = map(float, out.stdout.split()[-2:])
    assert merged_gap < 1e-4 < base_gap


@pytest.mark.parametrize("adapter", ["mor", "loratrf"])
def test_axolotl_merge_lora_refuses_token_dependent_methods(tmp_path, tiny_model_dir, chat_file, adapter):
    cfg = _axolotl_yaml(tmp_path, tiny_model_dir, chat_file, adapter)
    proc = subprocess.run(["axolotl", "merge-lora", str(cfg), f"--lora-model-dir={tmp_path}"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 2
    assert f"error: {adapter.upper()}'s update depends on each token" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "merged").exists()


def test_axolotl_inference_generates_with_our_adapter(tmp_path, tiny_model_dir, chat_file):
    adapter = _saved_adapter(tmp_path, tiny_model_dir, "mor")
    cfg = _axolotl_yaml(tmp_path, tiny_model_dir, chat_file, "mor")
    proc = subprocess.run(["axolotl", "inference", str(cfg), f"--lora-model-dir={adapter}"], cwd=tmp_path,
                          env=_env(), input="Hello there\n", capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"loaded the mor adapter from {adapter}" in proc.stderr
    assert proc.stdout.count("=" * 80) >= 3  # the prompt was read and an answer printed


def test_rl_under_axolotl_is_refused_for_our_adapters(capsys):
    """Axolotl's RL builder hands a plugin's trainer class no model or reference: refused in one line, pointing to
    plugin.train, which runs the same YAML with the auxiliary losses."""
    from plugin.integrations.axolotl import LoRAVariantsPlugin

    with pytest.raises(SystemExit) as stop:
        LoRAVariantsPlugin().register({"adapter": "mor", "rl": "dpo"})
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "python -m plugin.train" in err[0] and err[0].startswith("error: rl: dpo")
