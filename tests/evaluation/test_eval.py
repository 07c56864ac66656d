"""The eval bridge: lm-eval scores the adapted model in-process, offline, for each adapter type and a 4-bit base."""

import json

import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM

import plugin
from plugin.evaluation.harness import evaluate
from plugin.eval import main

from ..helpers import FIXTURES_DIR, tiny_llama

FIXTURES = FIXTURES_DIR / "eval"


def _save_adapter(tiny_model_dir, path, config):
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    with torch.no_grad():  # make the adapter change the outputs noticeably
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    model.save_pretrained(path)
    return path


def _acc(report, task="local_arc_easy", metric="acc"):
    return next(r["value"] for r in report["rows"] if r["task"] == task and r["metric"] == metric)


@pytest.mark.slow
def test_base_model_offline_suite_writes_table_and_json(tiny_model_dir, tmp_path, capsys):
    report = evaluate(str(tiny_model_dir), suite="commonsense", data_dir=str(FIXTURES), limit=4, batch_size=4,
                      output=str(tmp_path / "res"))
    assert {r["task"] for r in report["rows"]} == {"local_arc_easy", "local_piqa"}
    assert all(r["n"] == 4 and 0 <= r["value"] <= 1 and r["stderr"] is not None for r in report["rows"])
    saved = json.loads((tmp_path / "res" / "results.json").read_text())
    assert saved["base_model"] == str(tiny_model_dir) and saved["adapter"] is None
    assert "| local_piqa | acc |" in (tmp_path / "res" / "results.md").read_text()
    # per-item scores (for paired comparisons) agree with lm-eval's aggregate accuracy
    items = json.loads((tmp_path / "res" / "item_scores.json").read_text())
    for task in ("local_arc_easy", "local_piqa"):
        assert len(items[task]) == 4 and sum(items[task]) / 4 == pytest.approx(_acc(report, task))
    assert "| task | metric | value | stderr | n |" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("config", [
    plugin.MPLoraConfig(r=4, num_paths=2, target_modules=["q_proj", "v_proj"]),
    plugin.MoRConfig(r=4, num_experts=3),
    plugin.LoRATRFConfig(r=4, trf_mode="input"),
], ids=["mplora", "mor", "loratrf"])
def test_adapter_changes_lm_eval_loglikelihoods(tiny_model_dir, tmp_path, config, monkeypatch):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "adapter", config)
    captured = {}
    import lm_eval

    real = lm_eval.simple_evaluate

    def spy(**kwargs):
        out = real(**kwargs)
        captured["model"] = kwargs["model"]._model
        return out

    monkeypatch.setattr(lm_eval, "simple_evaluate", spy)
    ours = evaluate(str(tiny_model_dir), str(adapter), tasks=["arc_easy"], data_dir=str(FIXTURES), limit=6)
    assert type(captured["model"].base_model).__name__ == type(config).__name__.replace("Config", "Model")
    # log-likelihood of the same request under base and adapted model differ
    from lm_eval.models.huggingface import HFLM

    request = [("Question: Which is a mammal?\nAnswer:", " a whale")]
    with_adapter = HFLM(pretrained=captured["model"], tokenizer=str(tiny_model_dir)).loglikelihood(
        [_Req(*request[0])])[0][0]
    with captured["model"].disable_adapter():
        without = HFLM(pretrained=captured["model"], tokenizer=str(tiny_model_dir)).loglikelihood([_Req(*request[0])])[0][0]
    assert with_adapter != pytest.approx(without, abs=1e-4)
    assert 0 <= _acc(ours) <= 1


class _Req:
    """The two fields lm-eval's loglikelihood reads from an Instance."""

    def __init__(self, context, continuation):
        self.args = (context, continuation)


def test_4bit_base_runs(tiny_model_dir):
    report = evaluate(str(tiny_model_dir), tasks=["piqa"], data_dir=str(FIXTURES), limit=3, load_in_4bit=True)
    assert report["load_in_4bit"] and report["rows"][0]["n"] == 3


@pytest.mark.slow
def test_math_template_generates_and_scores(tiny_model_dir, tmp_path):
    report = evaluate(str(tiny_model_dir), tasks=["svamp"], data_dir=str(FIXTURES), limit=2, output=str(tmp_path))
    row = next(r for r in report["rows"] if r["metric"] == "exact_match")
    assert row["task"] == "local_svamp" and 0 <= row["value"] <= 1
    items = json.loads((tmp_path / "item_scores.json").read_text())["local_svamp"]
    assert len(items) == 2 and sum(items) / 2 == pytest.approx(row["value"])  # one score per item, not per filter


@pytest.mark.slow
@pytest.mark.parametrize("argv,message", [
    (["--suite", "trivia"], "unknown suite 'trivia'"),
    (["--tasks", "arc_easyy"], "unknown lm-eval task 'arc_easyy'; did you mean 'arc_easy'?"),
    (["--tasks", "nope", "--data_dir", str(FIXTURES)], "task 'nope' has no file"),
    (["--suite", "mmlu", "--data_dir", str(FIXTURES)], "has none of the mmlu suite's files"),
    (["--suite", "commonsense", "--data_dir", "/nonexistent"], "--data_dir not found"),
    (["--suite", "commonsense", "--adapter", "/nonexistent/adapter"], "no adapter at /nonexistent/adapter"),
    ([], "nothing to evaluate"),
    (["--suite", "commonsense", "--limit", "0"], "--limit must be > 0"),
])
def test_bad_input_is_one_line_exit_2(tiny_model_dir, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--base", str(tiny_model_dir), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1]


def test_adapter_for_another_base_model(tiny_model_dir, tmp_path, capsys):
    other = tiny_llama(vocab_size=64, hidden_size=48, intermediate_size=96)
    get_peft_model(other, plugin.MoRConfig(r=4)).save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit) as exit_info:
        main(["--base", str(tiny_model_dir), "--adapter", str(tmp_path / "other"), "--tasks", "piqa",
              "--data_dir", str(FIXTURES)])
    assert exit_info.value.code == 2
    assert "does not fit the base model" in capsys.readouterr().err


def test_empty_data_file(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "piqa.jsonl").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["--base", str(tiny_model_dir), "--tasks", "piqa", "--data_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "is empty" in capsys.readouterr().err


@pytest.mark.slow
def test_suites_name_only_tasks_lm_eval_knows():
    """Every task in eval/suites/*.yaml groups resolves in lm-eval's registry (ours included)."""
    import yaml
    from lm_eval.tasks import TaskManager

    from plugin.evaluation.harness import SUITES, SUITES_DIR

    manager = TaskManager(include_path=[str(SUITES_DIR)])
    for suite, names in SUITES.items():
        assert all(n in manager.all_tasks for n in names), suite
    for group_file in SUITES_DIR.glob("*.yaml"):
        tasks = yaml.safe_load(group_file.read_text())["task"]
        missing = [t for t in tasks if t not in manager.all_tasks]
        assert not missing, (group_file.name, missing)


def test_offline_suites_cover_bundled_data():
    from plugin.evaluation.harness import LOCAL_SUITES

    bundled = {p.stem for p in (FIXTURES.parent.parent.parent / "data" / "eval").glob("*.jsonl")}
    assert bundled <= {t for tasks in LOCAL_SUITES.values() for t in tasks}
    assert "mmlu" in bundled and len(bundled & set(LOCAL_SUITES["commonsense"])) == 7
