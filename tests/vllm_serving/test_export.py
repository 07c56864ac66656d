"""``python -m plugin.export RUN --vllm OUT``: the folder's layout, and one ``error:`` line, nothing written, for
every adapter the served model would not reproduce exactly. No vLLM needed: these run on the main stack too."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

import plugin
from plugin.export import main as export_main

from ..helpers import one_error_line, read_json


def _save(model_dir, config, folder):
    torch.manual_seed(0)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mor(tiny_model_dir, tmp_path_factory):
    return _save(tiny_model_dir, plugin.MoRConfig(r=4, num_experts=2, target_modules=["q_proj", "up_proj"]),
                 tmp_path_factory.mktemp("export") / "mor")


def test_the_folder_is_the_base_the_adapter_and_a_card(mor, tiny_model_dir, tmp_path):
    assert export_main([str(mor), "--vllm", str(tmp_path / "out")]) == 0
    config = read_json(tmp_path / "out" / "config.json")
    assert config["architectures"] == ["MoRLlamaForCausalLM"]
    assert config["plugin_adapter"] == read_json(mor / "adapter_config.json")
    assert (tmp_path / "out" / "plugin_adapter.safetensors").read_bytes() == (
        mor / "adapter_model.safetensors").read_bytes()
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()
    assert not (tmp_path / "out" / "adapter_config.json").exists()  # transformers would take it for an adapter
    card = (tmp_path / "out" / "README.md").read_text()
    assert "vllm.entrypoints.openai.api_server --model" in card and "setup_vllm.sh" in card
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # written aside, moved into place


def test_an_existing_folder_needs_overwrite(mor, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    assert "--overwrite" in one_error_line(capsys, lambda: export_main([str(mor), "--vllm", str(tmp_path / "out")]))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep"]
    assert export_main([str(mor), "--vllm", str(tmp_path / "out"), "--overwrite"]) == 0
    assert not (tmp_path / "out" / "keep").exists()


def _edited(adapter, tmp_path, **keys):
    folder = shutil.copytree(adapter, tmp_path / "edited")
    config = read_json(folder / "adapter_config.json")
    (folder / "adapter_config.json").write_text(json.dumps({**config, **keys}))
    return folder


REFUSALS = {
    "lora": ("--enable-lora", lambda d, mor, tmp: _save(d, LoraConfig(r=4, target_modules=["q_proj"]), tmp / "l")),
    "modules_to_save": ("modules_to_save", lambda d, mor, tmp: _edited(mor, tmp, modules_to_save=["lm_head"])),
    "target_parameters": ("target_parameters",
                          lambda d, mor, tmp: _edited(mor, tmp, target_parameters=["mlp.experts.gate_up_proj"])),
    "pissa": ("residual base", lambda d, mor, tmp: _edited(mor, tmp, init_weights="pissa")),
    "lm_head": ("serves adapters on q_proj", lambda d, mor, tmp: _save(
        d, plugin.LoRATRFConfig(r=4, target_modules=["lm_head", "q_proj"]), tmp / "head")),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_what_vllm_would_not_reproduce_is_refused(case, mor, tiny_model_dir, tmp_path, capsys):
    words, make = REFUSALS[case]
    adapter = make(tiny_model_dir, mor, tmp_path)
    line = one_error_line(capsys, lambda: export_main([str(adapter), "--vllm", str(tmp_path / "out")]))
    assert words in line
    assert not (tmp_path / "out").exists()


def test_a_base_vllm_is_not_served_over_is_refused(mor, tiny_model_dir, tmp_path, capsys):
    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    config = read_json(base / "config.json")
    (base / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    line = one_error_line(capsys, lambda: export_main([str(mor), "--vllm", str(tmp_path / "out"), "--base",
                                                       str(base)]))
    assert "GPT2LMHeadModel" in line and "LlamaForCausalLM" in line


def test_one_export_at_a_time(mor, tmp_path, capsys):
    line = one_error_line(capsys, lambda: export_main([str(mor), "--vllm", str(tmp_path / "a"), "--merge",
                                                       str(tmp_path / "b")]))
    assert "one of --merge" in line


def test_serve_with_vllm_takes_one_adapter(mor, tmp_path, capsys):
    from plugin.serve import main as serve_main

    line = one_error_line(capsys, lambda: serve_main([str(mor), "--adapter", f"b={mor}", "--engine", "vllm"]))
    assert "one adapter" in line
    line = one_error_line(capsys, lambda: serve_main([str(mor), "--", "--dtype", "float32"]))
    assert "--engine vllm" in line
