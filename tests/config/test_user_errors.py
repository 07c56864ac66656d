"""Each user mistake: one clear line on stderr, exit status 2, no traceback, existing outputs untouched."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plugin.train import main

from ..helpers import REPO, write_yaml

DROP = object()


def _prepare(tmp_path, base_cfg, change, setup):
    cfg = {**base_cfg}
    for key, value in change.items():
        if value is DROP:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    if setup:
        setup(tmp_path, cfg)
    return cfg


def _file(name, text):
    def setup(tmp_path, cfg):
        path = tmp_path / name
        path.write_text(text)
        cfg["datasets"] = [{"path": str(path), **({"type": cfg.pop("_type")} if "_type" in cfg else {})}]
    return setup


def _finished_run(tmp_path, cfg):
    out = tmp_path / "out"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    (out / "finished.json").write_text("{}")


def _interrupted_run(tmp_path, cfg):
    (tmp_path / "out" / "checkpoint-4").mkdir(parents=True)
    (tmp_path / "out" / "checkpoint-4" / "trainer_state.json").write_text("{}")


def _bad_deepspeed_json(tmp_path, cfg):
    (tmp_path / "bad_ds.json").write_text("{zero")
    cfg["deepspeed"] = str(tmp_path / "bad_ds.json")


def _output_is_file(tmp_path, cfg):
    (tmp_path / "outfile").write_text("keep me")
    cfg["output_dir"] = str(tmp_path / "outfile")


CASES = [
    ("unknown key", {"lora_rr": 8}, "unknown key 'lora_rr'; did you mean 'lora_r'?", None),
    ("wrong type", {"lora_r": "eight"}, "lora_r must be an integer, got 'eight'", None),
    ("float for int", {"micro_batch_size": 0.5}, "micro_batch_size must be an integer", None),
    ("bad bool", {"bf16": "yes"}, "bf16 must be true or false or 'auto'", None),
    ("bad adapter", {"adapter": "moe"}, "adapter must be 'lora' or 'mplora' or 'mor' or 'loratrf' or 'full', got 'moe'; did you mean 'mor'?", None),
    ("bad target module", {"lora_target_modules": ["q_projj"]}, "'q_projj' matches no layer of this model", None),
    ("target not linear", {"lora_target_modules": ["input_layernorm"]}, "which is not a linear layer", None),
    ("r <= 0", {"lora_r": 0}, "lora_r must be > 0", None),
    ("num_paths > d_out", {"adapter": "mplora", "mplora_num_paths": 10000}, "num_paths=10000 must be between 1", None),
    ("num_experts <= 0", {"mor_num_experts": -1}, "mor_num_experts must be a positive integer", None),
    ("bad loratrf mode", {"adapter": "loratrf", "loratrf_mode": "middle"}, "loratrf_mode must be 'output' or 'input'", None),
    ("key of another adapter", {"adapter": "mplora", "mor_num_experts": 4}, "mor_num_experts is set but adapter is 'mplora'", None),
    ("dropout out of range", {"lora_dropout": 1.5}, "lora_dropout must be in [0, 1)", None),
    ("negative lr", {"learning_rate": -1e-4}, "learning_rate must be > 0", None),
    ("4 and 8 bit", {"load_in_4bit": True, "load_in_8bit": True}, "load_in_4bit and load_in_8bit are both true", None),
    ("quantization_bit", {"quantization_bit": 3}, "quantization_bit must be 4 or 8", None),
    ("alias twice", {"lora_rank": 16}, "'lora_r' is given twice", None),
    ("no steps", {"max_steps": -1, "num_epochs": 0}, "set max_steps > 0 or num_epochs > 0", None),
    ("no datasets", {"datasets": []}, "no datasets", None),
    ("dataset key typo", {"datasets": [{"path": "x.jsonl", "typ": "messages"}]}, "unknown key 'datasets[0].typ'; did you mean 'type'?", None),
    ("bad dataset type", {"datasets": [{"path": "x.jsonl", "type": "oasst"}]}, "datasets[0].type must be 'messages' or 'chat_template' or 'sharegpt' or 'alpaca' or 'text'", None),
    ("missing dataset file", {"datasets": [{"path": "data/nope.jsonl"}]}, "dataset file not found: data/nope.jsonl", None),
    ("unsupported file type", {}, "unsupported file type '.txt'", _file("data.txt", "hello")),
    ("malformed jsonl", {}, "could not be read as json", _file("bad.jsonl", '{"messages": [\n')),
    ("wrong format for data", {"_type": "alpaca"}, "has no column 'instruction' needed by type 'alpaca'", _file("c.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')),
    ("chat not ending with assistant", {}, "row 0 (counting from 0): no assistant turn to train on", _file("c.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n')),
    ("bad role", {}, "row 0 (counting from 0): message 0 has unknown role 'robot'", _file("c.jsonl", '{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n')),
    ("val_set_size too big", {"val_set_size": 100}, "val_set_size=100.0 leaves no training", None),
    ("missing base model", {"base_model": "/nonexistent/model"}, "cannot load tokenizer '/nonexistent/model'", None),
    ("finished output dir", {}, "already holds a finished run", _finished_run),
    ("interrupted run, resume off", {"resume_from_checkpoint": None}, "holds checkpoints of an unfinished run (checkpoint-4)", _interrupted_run),
    ("resume folder missing", {"resume_from_checkpoint": "/nonexistent/ckpt"}, "resume_from_checkpoint: /nonexistent/ckpt: folder not found", None),
    ("output_dir is a file", {}, "exists and is a file", _output_is_file),
    ("unknown scheduler", {"lr_scheduler": "zigzag"}, "zigzag", None),
    ("4-bit without bitsandbytes", {"load_in_4bit": True}, "load_in_4bit/load_in_8bit need bitsandbytes", None),
    ("deepspeed file missing", {"deepspeed": "ds.json"}, "deepspeed: ds.json: no such file (a relative path is read from", None),
    ("deepspeed file not JSON", {}, "bad_ds.json is not readable JSON", _bad_deepspeed_json),
    ("special token not in the vocabulary", {"special_tokens": {"pad_token": "<|nope|>"}}, "special_tokens: pad_token '<|nope|>' is not in the tokenizer's vocabulary", None),
    ("PPO stage", {"stage": "ppo"}, "stage: ppo: sft, pt, dpo, kto and rm run here; PPO does not", None),
    ("do_train false", {"do_train": False}, "do_train: false: plugin.train always trains", None),
    ("constant-then-cosine schedule", {"cosine_constant_lr_ratio": 0.8}, "cosine_constant_lr_ratio: 0.8: Axolotl's constant-then-cosine schedule", None),
    ("eot token not in the vocabulary", {"eot_tokens": ["<end_of_turn>"]}, "eot_tokens: '<end_of_turn>' is not a token of this tokenizer", None),
    ("optimizer without its package", {"optimizer": "lomo"}, "optimizer lomo: You need to install `lomo_optim`", None),
    ("report_to without its package", {"report_to": "dvclive"}, "requires dvclive to be installed", None),
    ("broken chat template", {"chat_template": "{% for m in messages %}{{ m.content }"}, "row 0 (counting from 0): the chat template failed on it", None),
    ("every row longer than sequence_len", {"sequence_len": 8}, "no row is left to train (16 with trained tokens past sequence_len 8)", None),
    ("resume from a non-checkpoint folder", {"resume_from_checkpoint": "__TMP__"}, "no readable trainer_state.json", None),
    ("unknown init", {"init_lora_weights": "loftq"}, "init_lora_weights must be True, False, 'gaussian', 'pissa'", None),
    ("PiSSA on a 4-bit base", {"pissa_init": True, "load_in_4bit": True}, "init_lora_weights: pissa_niter_16 writes the residual W - s B A into the base", None),
    ("PiSSA converted at save", {"pissa_init": True, "pissa_convert": True}, "pissa_convert: true (saving PiSSA as a plain LoRA delta) is not supported", None),
    ("push without a repo", {"push_to_hub": True}, "push_to_hub: true needs hub_model_id", None),
    ("FSDP on a CPU machine", {"fsdp_config": {"fsdp_offload_params": True}}, "fsdp: FSDP needs GPUs", None),
]


@pytest.mark.parametrize("name,change,message,setup", CASES, ids=[c[0] for c in CASES])
def test_user_error_is_one_clear_line(tmp_path, base_cfg, capsys, monkeypatch, name, change, message, setup):
    if name == "4-bit without bitsandbytes":
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)
        setup = None
    change = {k: str(tmp_path) if v == "__TMP__" else v for k, v in change.items()}
    cfg = _prepare(tmp_path, base_cfg, change, setup)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    cfg_file = write_yaml(tmp_path / "cfg.yaml", **cfg)
    with pytest.raises(SystemExit) as exit_info:
        main([str(cfg_file)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    after = sorted(p.name for p in tmp_path.rglob("*") if p.name != "cfg.yaml")
    assert [p for p in after if p not in before] == [], "a failed run must not write outputs"


def test_config_file_errors(tmp_path, capsys):
    cases = [
        (tmp_path / "missing.yaml", "config file not found"),
        (tmp_path / "bad.yaml", "is not valid YAML (line 2)"),
        (tmp_path / "list.yaml", "must hold a mapping of keys, got list"),
    ]
    (tmp_path / "bad.yaml").write_text("a: 1\n  b: [\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    for path, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main([str(path)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_override_errors(tmp_path, base_cfg, capsys):
    cfg_file = write_yaml(tmp_path / "cfg.yaml", **base_cfg)
    for argv, message in [([str(cfg_file), "--lora_r"], "override --lora_r needs a value"),
                          ([str(cfg_file), "stray"], "unexpected argument 'stray'"),
                          ([str(cfg_file), "--lora_r", "x"], "lora_r must be an integer")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_overrides_and_aliases_resolve(tmp_path, base_cfg, capsys):
    cfg = {**base_cfg, "lora_rank": 6, "cutoff_len": 64, "quantization_bit": 4}
    cfg.pop("lora_r")
    cfg.pop("sequence_len")
    cfg_file = write_yaml(tmp_path / "cfg.yaml", **cfg)
    assert main([str(cfg_file), "--print-config", "--adapter", "mplora", "--mplora_num_paths=3"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert (resolved["lora_r"], resolved["sequence_len"], resolved["load_in_4bit"]) == (6, 64, True)
    assert (resolved["adapter"], resolved["mplora_num_paths"]) == ("mplora", 3)


@pytest.mark.slow
def test_cli_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "plugin.train", str(tmp_path / "nope.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: config file not found: {tmp_path / 'nope.yaml'}"
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_saves_nothing_as_finished(tmp_path, base_cfg, capsys):
    """learning_rate 1e30 used to end with exit 0, 'adapter saved' and NaN weights."""
    cfg = write_yaml(tmp_path / "nan.yaml", **{**base_cfg, "learning_rate": 1e30, "max_grad_norm": 0.0,
                                               "optimizer": "sgd", "max_steps": 4, "save_steps": 100})
    with pytest.raises(SystemExit) as exit_info:
        main([str(cfg)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, err[-2000:]
    errors = [line[line.index("error:"):] for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: training stopped at step 2: the task loss is not finite")
    assert "Traceback" not in err and "adapter saved" not in out
    assert not (Path(base_cfg["output_dir"]) / "adapter_config.json").exists()
