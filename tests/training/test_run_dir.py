"""The run folder: ownership, overwrite, resume with changed settings, locks, corrupt checkpoints, checks before
training, Ctrl-C. Nothing lost, nothing silent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from plugin.config import load_config, to_dict
from plugin.train import main as train_main
from plugin.training import run_dir
from plugin.utils.errors import UserError

from ..helpers import FIXTURES_DIR, REPO, write_yaml
from ..helpers import one_error_line as _one_error_line

FIXTURES = FIXTURES_DIR / "eval"


def test_folder_with_users_files_is_refused_and_untouched(base_cfg, tmp_path, capsys):
    out = Path(base_cfg["output_dir"])
    out.mkdir()
    (out / "README.md").write_text("my notes")
    line = _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **base_cfg))]))
    assert "holds files this package did not write (README.md" in line
    assert [p.name for p in out.iterdir()] == ["README.md"] and (out / "README.md").read_text() == "my notes"


@pytest.mark.slow
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


def test_modules_to_save_naming_nothing(base_cfg, tmp_path, capsys):
    cfg = {**base_cfg, "lora_modules_to_save": ["lm_haed"]}
    line = _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **cfg))]))
    assert "lora_modules_to_save: 'lm_haed' matches no module" in line


@pytest.mark.slow
def test_ctrl_c_says_where_the_run_resumes(base_cfg, tmp_path):
    """SIGINT while a checkpoint is being written stops the run promptly, saying where it resumes. The process starts
    with SIGINT ignored, as a background job of a non-interactive shell (CI, nohup) inherits it: Python then installs
    no KeyboardInterrupt handler, and the run used to go on to its last step. If it does not exit, the test says what
    it was doing (faulthandler's dump of every thread, on SIGABRT)."""
    import signal
    import time

    cfg = write_yaml(tmp_path / "c.yaml", **{**base_cfg, "max_steps": 400, "save_steps": 2})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "plugin.train", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 240
    while not (Path(base_cfg["output_dir"]) / "checkpoint-2").is_dir() and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"the run outlived SIGINT by 60 s; where it was:\n{err[-6000:]}")
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert "error: interrupted; rerun the same command to resume" in err
    assert not (Path(base_cfg["output_dir"]) / run_dir.LOCK).exists()  # the lock is released
