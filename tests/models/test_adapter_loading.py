"""Strict adapter loading: an adapter that does not load completely (wrong type, renamed or missing weights, NaN,
truncated or garbage files, a config lacking a method field) is refused in one line; an intact one loads."""

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import plugin
from plugin.eval import main as eval_main

from ..helpers import FIXTURES_DIR
from ..helpers import one_error_line as _one_error_line

FIXTURES = FIXTURES_DIR / "eval"


@pytest.fixture(scope="module")
def saved_adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    for name, config in {"mor": plugin.MoRConfig(r=4, num_experts=4), "lora": LoraConfig(r=4)}.items():
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
        model.save_pretrained(root / name)
    return root


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "adapter_config.json").read_text())
    change(config)
    (folder / "adapter_config.json").write_text(json.dumps(config))


def _lora_labelled_mor(folder):
    _edit_config(folder, lambda c: c.update(peft_type="MOR"))


def _renamed_keys(folder):
    state = load_file(str(folder / "adapter_model.safetensors"))
    save_file({k.replace("mor_A", "mor_a"): v for k, v in state.items()}, str(folder / "adapter_model.safetensors"))


def _nan_weights(folder):
    state = load_file(str(folder / "adapter_model.safetensors"))
    first = sorted(state)[0]
    state[first] = torch.full_like(state[first], float("nan"))
    save_file(state, str(folder / "adapter_model.safetensors"))


def _truncated(folder):
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])


CASES = [
    ("mor", "lora file labelled MOR", _lora_labelled_mor, "does not load completely"),
    ("mor", "renamed keys", _renamed_keys, "does not load completely: 6 adapter weights missing"),
    ("mor", "NaN weights", _nan_weights, "has non-finite weights"),
    ("mor", "truncated weights", _truncated, "is unreadable (truncated or not a safetensors file)"),
    ("mor", "garbage config", lambda f: (f / "adapter_config.json").write_text("{not json"), "is not valid JSON"),
    ("mor", "no weights", lambda f: (f / "adapter_model.safetensors").unlink(), "has no adapter_model.safetensors"),
    ("mor", "config lacks num_experts", lambda f: _edit_config(f, lambda c: c.pop("num_experts")), "lacks num_experts"),
]
CASES[0] = ("lora", *CASES[0][1:])


@pytest.mark.parametrize("source,name,damage,message", CASES, ids=[c[1] for c in CASES])
def test_adapter_that_does_not_load_cleanly_is_refused(tiny_model_dir, saved_adapters, tmp_path, capsys,
                                                       source, name, damage, message):
    folder = _copy(saved_adapters / source, tmp_path / "adapter")
    damage(folder)
    line = _one_error_line(capsys, lambda: eval_main(["--base", str(tiny_model_dir), "--adapter", str(folder),
                                                      "--tasks", "piqa", "--data_dir", str(FIXTURES)]))
    assert message in line


def test_intact_adapter_still_loads(tiny_model_dir, saved_adapters):
    from plugin.models.adapter_io import load_model_with_adapter

    model, _, identity = load_model_with_adapter(str(tiny_model_dir), str(saved_adapters / "mor"))
    assert identity["adapter_config"]["peft_type"] == "MOR" and model.peft_config["default"].num_experts == 4
