"""Nothing silent, nothing lost: strict adapter loading, output_dir ownership, resumes that would mix runs, locks,
corrupt checkpoints, late checks, and user errors that used to end in tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import plugin
from plugin.training import run_dir
from plugin.config import load_config, to_dict
from plugin.utils.errors import UserError
from plugin.eval import main as eval_main
from plugin.train import main as train_main

from .helpers import REPO, write_yaml

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"


def _one_error_line(capsys, call) -> str:
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


# --- strict adapter loading (eval bridge) ---------------------------------------------------------------------

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
    from plugin.evaluation.harness import load_model_for_eval

    model, _, identity = load_model_for_eval(str(tiny_model_dir), str(saved_adapters / "mor"))
    assert identity["adapter_config"]["peft_type"] == "MOR" and model.peft_config["default"].num_experts == 4


@pytest.mark.parametrize("argv,message", [
    (["--num_fewshot", "-1"], "--num_fewshot must be >= 0"),
    (["--output", "__FILE__"], "is a file; pass a folder"),
])
def test_eval_settings_checked_before_loading(tiny_model_dir, tmp_path, capsys, argv, message):
    (tmp_path / "results").write_text("keep me")
    argv = [str(tmp_path / "results") if a == "__FILE__" else a for a in argv]
    line = _one_error_line(capsys, lambda: eval_main(["--base", "/nonexistent/model", "--tasks", "piqa",
                                                      "--data_dir", str(FIXTURES), *argv]))
    assert message in line  # the base model (which does not exist) was never loaded


# --- output_dir: ownership, overwrite, resume, lock, checkpoints --------------------------------------------

def test_folder_with_users_files_is_refused_and_untouched(base_cfg, tmp_path, capsys):
    out = Path(base_cfg["output_dir"])
    out.mkdir()
    (out / "README.md").write_text("my notes")
    line = _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **base_cfg))]))
    assert "holds files this package did not write (README.md" in line
    assert [p.name for p in out.iterdir()] == ["README.md"] and (out / "README.md").read_text() == "my notes"


def test_finished_run_then_failed_overwrite_keeps_it_and_a_valid_overwrite_replaces_it(base_cfg, tmp_path, capsys):
    cfg_file = write_yaml(tmp_path / "c.yaml", **base_cfg)
    assert train_main([str(cfg_file)]) == 0
    out = Path(base_cfg["output_dir"])
    assert (out / "finished.json").is_file() and not (out / ".lock").exists() and not (out / ".finishing").exists()
    before = (out / "adapter_model.safetensors").read_bytes()
    typo = write_yaml(tmp_path / "t.yaml", **{**base_cfg, "overwrite_output_dir": True,
                                              "datasets": [{"path": str(tmp_path / "typo.jsonl")}]})
    assert "dataset file not found" in _one_error_line(capsys, lambda: train_main([str(typo)]))
    assert (out / "adapter_model.safetensors").read_bytes() == before and (out / "finished.json").is_file()
    again = write_yaml(tmp_path / "a.yaml", **{**base_cfg, "overwrite_output_dir": True, "seed": 7})
    assert train_main([str(again)]) == 0
    assert (out / "adapter_model.safetensors").read_bytes() != before
    assert json.loads((out / "run_record.json").read_text())["config"]["seed"] == 7


def _interrupted(out: Path, config: dict, steps=(2, 4)) -> None:
    out.mkdir(parents=True)
    (out / run_dir.RUN_RECORD).write_text(json.dumps({"config": config}))
    for step in steps:
        ckpt = out / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        save_file({"w": torch.ones(64)}, str(ckpt / "adapter_model.safetensors"))


def test_resume_with_changed_settings_is_refused_harmless_ones_pass(base_cfg, tmp_path):
    cfg = load_config(None, base_cfg)
    _interrupted(Path(cfg.output_dir), to_dict(cfg))
    changed = load_config(None, {**base_cfg, "learning_rate": 5e-3, "lora_alpha": 32})
    with pytest.raises(UserError, match=r"other settings \(learning_rate 0.001 -> 0.005; lora_alpha 8.0 -> 32.0\)"):
        run_dir.plan(changed, to_dict(changed))
    harmless = load_config(None, {**base_cfg, "logging_steps": 7, "save_steps": 3})
    assert run_dir.plan(harmless, to_dict(harmless)).resume.endswith("checkpoint-4")


def test_corrupt_newest_checkpoint_is_skipped_saying_so(base_cfg, tmp_path, capsys):
    cfg = load_config(None, base_cfg)
    _interrupted(Path(cfg.output_dir), to_dict(cfg))
    newest = Path(cfg.output_dir) / "checkpoint-4" / "adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-40])
    assert run_dir.plan(cfg, to_dict(cfg)).resume.endswith("checkpoint-2")
    assert "skipping checkpoint-4 (adapter_model.safetensors is unreadable" in capsys.readouterr().err


def test_lock_refuses_a_live_run_and_clears_a_stale_one(tmp_path, capsys):
    import socket

    out = tmp_path / "out"
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / run_dir.LOCK).write_text(json.dumps({"pid": live.pid, "host": socket.gethostname()}))
        with pytest.raises(UserError, match=f"in use by another run \\(process {live.pid}"):
            run_dir.acquire_lock(out)
    finally:
        live.kill()
        live.wait()
    run_dir.acquire_lock(out)  # the same pid is dead now: a stale lock
    assert f"removing the stale lock of process {live.pid}" in capsys.readouterr().err
    assert json.loads((out / run_dir.LOCK).read_text())["pid"] == os.getpid()
    run_dir.release_lock(out)
    assert not (out / run_dir.LOCK).exists()


def test_eval_section_is_checked_before_training(base_cfg, tmp_path, capsys):
    cfg = {**base_cfg, "eval": {"tasks": ["piqa"], "data_dir": str(tmp_path / "missing")}}
    line = _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **cfg))]))
    assert "--data_dir not found" in line and not Path(base_cfg["output_dir"]).exists()


def test_output_dir_under_a_file(base_cfg, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cfg = {**base_cfg, "output_dir": str(tmp_path / "afile" / "run")}
    assert "is a file, not a folder" in _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **cfg))]))


# --- user errors that used to be tracebacks -------------------------------------------------------------------

@pytest.mark.parametrize("name,content,message", [
    ("latin1.jsonl", "\xe9t\xe9".encode("latin-1"), "is not UTF-8 text (byte 0)"),
    ("empty.jsonl", b"", "is an empty file"),
])
def test_unreadable_data_files(base_cfg, tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content)
    cfg = {**base_cfg, "datasets": [{"path": str(tmp_path / name)}]}
    assert message in _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **cfg))]))


def test_saved_dataset_without_the_split(base_cfg, tmp_path, capsys):
    from datasets import Dataset, DatasetDict

    DatasetDict({"validation": Dataset.from_list([{"text": "x"}])}).save_to_disk(str(tmp_path / "saved"))
    cfg = {**base_cfg, "datasets": [{"path": str(tmp_path / "saved"), "type": "text"}]}
    line = _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **cfg))]))
    assert "has no split 'train'; set split: to one of validation" in line


def test_modules_to_save_naming_nothing(base_cfg, tmp_path, capsys):
    cfg = {**base_cfg, "lora_modules_to_save": ["lm_haed"]}
    line = _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **cfg))]))
    assert "lora_modules_to_save: 'lm_haed' matches no module" in line


def test_study_run_with_a_misspelt_key_is_refused(tmp_path):
    import yaml

    from plugin.experiments.study import load_study

    study = yaml.safe_load((REPO / "configs" / "study_smollm2.yaml").read_text())
    study["runs"].append({"name": "typo", "adaptr": "lora"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(UserError, match="study run 'typo': unknown key 'adaptr'; did you mean 'adapter'"):
        load_study(path)


# --- eval, plot, bench, study: bad input is one line -----------------------------------------------------------

def test_task_file_of_the_wrong_shape(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "piqa.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "label": 1}\n{"question": "q", "answer": 2}\n')
    line = _one_error_line(capsys, lambda: eval_main(["--base", str(tiny_model_dir), "--tasks", "piqa",
                                                      "--data_dir", str(tmp_path)]))
    assert "piqa.jsonl line 2 is not a {question, choices, label} row" in line


def test_hub_task_while_offline(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    line = _one_error_line(capsys, lambda: eval_main(["--base", str(tiny_model_dir), "--tasks", "arc_easy", "--limit", "2"]))
    assert "could not be fetched from the hub" in line and "--data_dir" in line


def test_plot_reads_past_a_half_written_telemetry_line(tmp_path, capsys):
    from plugin.plot import main as plot_main

    rows = [{"step": s, "orth_loss": {"layers.0.q_proj": 0.1 / s}} for s in (1, 2)]
    (tmp_path / "telemetry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "orth')
    assert plot_main([str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "half-written line" in captured.err and (tmp_path / "plots" / "orthogonality.png").is_file()


def test_bench_unknown_method(capsys):
    from plugin.bench import main as bench_main

    assert "unknown method 'foo'" in _one_error_line(capsys, lambda: bench_main(["--methods", "lora,foo"]))


def test_study_output_dir_is_a_file(tmp_path, capsys):
    import yaml

    from plugin.study import main as study_main

    study = yaml.safe_load((REPO / "configs" / "study_smollm2.yaml").read_text())
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**study, "output_dir": str(tmp_path / "afile")}))
    assert "is a file" in _one_error_line(capsys, lambda: study_main([str(path)]))


def test_ctrl_c_says_where_the_run_resumes(base_cfg, tmp_path):
    import signal
    import time

    cfg = write_yaml(tmp_path / "c.yaml", **{**base_cfg, "max_steps": 400, "save_steps": 2})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "plugin.train", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (Path(base_cfg["output_dir"]) / "checkpoint-2").is_dir() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err
    assert "error: interrupted; rerun the same command to resume" in err
    assert not (Path(base_cfg["output_dir"]) / run_dir.LOCK).exists()  # the lock is released
