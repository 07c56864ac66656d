"""Bad input to the eval bridge and the plots is one line, checked before anything heavy loads."""

import json

import pytest

from plugin.eval import main as eval_main

from ..helpers import FIXTURES_DIR
from ..helpers import one_error_line as _one_error_line

FIXTURES = FIXTURES_DIR / "eval"


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


def test_task_file_of_the_wrong_shape(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "piqa.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "label": 1}\n{"question": "q", "answer": 2}\n')
    line = _one_error_line(capsys, lambda: eval_main(["--base", str(tiny_model_dir), "--tasks", "piqa",
                                                      "--data_dir", str(tmp_path)]))
    assert "piqa.jsonl line 2 is not a {question, choices, label} row" in line


@pytest.mark.slow
def test_hub_task_while_offline(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    line = _one_error_line(capsys, lambda: eval_main(["--base", str(tiny_model_dir), "--tasks", "arc_easy", "--limit", "2"]))
    assert "could not be fetched from the hub" in line and "--data_dir" in line


@pytest.mark.slow
def test_plot_reads_past_a_half_written_telemetry_line(tmp_path, capsys):
    from plugin.plot import main as plot_main

    rows = [{"step": s, "orth_loss": {"layers.0.q_proj": 0.1 / s}} for s in (1, 2)]
    (tmp_path / "telemetry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "orth')
    assert plot_main([str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "half-written line" in captured.err and (tmp_path / "plots" / "orthogonality.png").is_file()
