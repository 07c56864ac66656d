"""lm-eval's own command line with our adapters (python -m plugin.lm_eval), user task folders, the papers' suites
offline, and the side-by-side comparison of evaluated runs."""

import json
import sys
from pathlib import Path

import pytest

import plugin
from plugin import lm_eval as wrapper
from plugin.evaluation.harness import TEMPLATES_DIR, evaluate
from plugin.eval import main as bridge_main
from plugin.eval import compare as compare_main

from ..helpers import REPO, method_config, tiny_llama
from .test_eval import FIXTURES, _save_adapter

CONFIGS = {  # trained-looking adapters are not needed here: the papers' init
    "mplora": method_config("mplora", num_paths=2, target_modules=["q_proj", "v_proj"], init_weights=True),
    "mor": method_config("mor", init_weights=True),
    "loratrf": method_config("loratrf_input", init_weights=True),
    "lora": method_config("lora", target_modules=["q_proj", "v_proj"], init_lora_weights=True),
}


@pytest.fixture
def user_tasks(tmp_path):
    """A user's own task folder: one multiple-choice task over a local file, as a user would write it."""
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    text = (TEMPLATES_DIR / "multiple_choice.yaml").read_text()
    text = text.replace("local_{task}", "my_arc").replace("{data_file}", str((FIXTURES / "arc_easy.jsonl").resolve()))
    (folder / "my_arc.yaml").write_text(text)
    return folder


def _run_wrapper(argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    return wrapper.main(argv)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(CONFIGS))
def test_lm_eval_cli_scores_equal_the_bridge(method, tiny_model_dir, tmp_path, user_tasks, monkeypatch):
    """Same base, adapter and user task: lm-eval's CLI (peft=) and the bridge log the same per-item loglikelihoods."""
    adapter = _save_adapter(tiny_model_dir, tmp_path / "adapter", CONFIGS[method])
    import lm_eval

    captured = {}
    real = lm_eval.simple_evaluate

    def spy(**kwargs):
        captured["results"] = real(**kwargs)
        return captured["results"]

    monkeypatch.setattr(lm_eval, "simple_evaluate", spy)
    evaluate(str(tiny_model_dir), str(adapter), tasks=["my_arc"], include_path=[str(user_tasks)], limit=4, batch_size=2)
    monkeypatch.setattr(lm_eval, "simple_evaluate", real)
    bridge = {s["doc_id"]: s["filtered_resps"] for s in captured["results"]["samples"]["my_arc"]}

    out = tmp_path / "lm_eval_out"
    assert _run_wrapper(["--model", "hf", "--model_args", f"pretrained={tiny_model_dir},peft={adapter},dtype=float32",
                         "--tasks", "my_arc", "--include_path", str(user_tasks), "--limit", "4", "--batch_size", "2",
                         "--log_samples", "--output_path", str(out)], monkeypatch) == 0
    (samples_file,) = out.rglob("samples_my_arc_*.jsonl")
    cli = {s["doc_id"]: s["filtered_resps"] for s in map(json.loads, samples_file.read_text().splitlines())}
    assert sorted(cli) == sorted(bridge) == [0, 1, 2, 3]
    for doc_id, responses in bridge.items():
        for (ll_bridge, greedy_bridge), (ll_cli, greedy_cli) in zip(responses, cli[doc_id]):
            assert float(ll_cli) == pytest.approx(float(ll_bridge), abs=1e-5) and str(greedy_cli) == str(greedy_bridge)


def _relabelled_lora(tiny_model_dir, tmp_path):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "relabelled", CONFIGS["lora"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    config.update(peft_type="MOR", num_experts=2)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    return adapter


def _other_base_adapter(tmp_path):
    from peft import get_peft_model
    other = tiny_llama(vocab_size=64, hidden_size=48, intermediate_size=96)
    get_peft_model(other, plugin.MoRConfig(r=4)).save_pretrained(tmp_path / "other")
    return tmp_path / "other"


def _broken_tasks(tmp_path):
    folder = tmp_path / "broken_tasks"
    folder.mkdir()
    (folder / "bad.yaml").write_text("task: bad\ndoc_to_text: [unclosed\n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("case,message", [
    ("not an adapter", "no adapter at"),
    ("adapter for another base", "does not fit the base model"),
    ("broken task yaml", "is not valid YAML (line"),
    ("missing task folder", "--include_path /nonexistent/tasks: folder not found"),
])
def test_lm_eval_cli_bad_input_is_one_line_exit_2(case, message, tiny_model_dir, tmp_path, user_tasks, capsys,
                                                  monkeypatch):
    peft, include = str(tmp_path), str(user_tasks)
    if case == "adapter for another base":
        peft = str(_other_base_adapter(tmp_path))
    elif case != "not an adapter":
        peft = str(_save_adapter(tiny_model_dir, tmp_path / "ok", CONFIGS["mor"]))
    if case == "broken task yaml":
        include = str(_broken_tasks(tmp_path))
    elif case == "missing task folder":
        include = "/nonexistent/tasks"
    with pytest.raises(SystemExit) as exit_info:
        _run_wrapper(["--model", "hf", "--model_args", f"pretrained={tiny_model_dir},peft={peft}", "--tasks", "my_arc",
                      "--include_path", include, "--limit", "2"], monkeypatch)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last


@pytest.mark.slow
def test_lm_eval_cli_refuses_an_adapter_whose_weights_do_not_load(tiny_model_dir, tmp_path, user_tasks, capsys,
                                                                  monkeypatch):
    """A LoRA file labelled MOR: PEFT only warns (the run would score the bare base); here it stops."""
    adapter = _relabelled_lora(tiny_model_dir, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        _run_wrapper(["--model", "hf", "--model_args", f"pretrained={tiny_model_dir},peft={adapter}", "--tasks",
                      "my_arc", "--include_path", str(user_tasks), "--limit", "2"], monkeypatch)
    assert exit_info.value.code == 2
    assert "does not load completely" in capsys.readouterr().err.strip().splitlines()[-1]


def test_bridge_refuses_a_broken_user_task_folder(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bridge_main(["--base", str(tiny_model_dir), "--tasks", "bad", "--include_path", str(_broken_tasks(tmp_path))])
    assert exit_info.value.code == 2
    assert "bad.yaml is not valid YAML (line 3)" in capsys.readouterr().err


def test_bridge_model_args_and_unknown_keys(tiny_model_dir, capsys):
    with pytest.raises(SystemExit):
        bridge_main(["--base", str(tiny_model_dir), "--tasks", "piqa", "--model_args", "device_map=auto"])
    assert "--model_args device_map=auto: the bridge honours dtype=float32|bfloat16" in capsys.readouterr().err


@pytest.mark.slow
def test_offline_lambada_and_nq_open_samples_score(tiny_model_dir, tmp_path):
    """The mor suite's language-modelling and knowledge tasks run offline from the bundled samples."""
    data = REPO / "data" / "eval"
    report = evaluate(str(tiny_model_dir), tasks=["lambada", "nq_open"], data_dir=str(data), limit=3, batch_size=3,
                      output=str(tmp_path))
    metrics = {(r["task"], r["metric"]) for r in report["rows"]}
    assert {("local_lambada", "acc"), ("local_lambada", "perplexity"), ("local_nq_open", "exact_match")} <= metrics
    items = json.loads((tmp_path / "item_scores.json").read_text())
    assert len(items["local_lambada"]) == len(items["local_nq_open"]) == 3


def _fake_run(folder: Path, method: str | None, acc: dict[str, list[float]]):
    folder.mkdir(parents=True)
    rows = [{"task": t, "metric": "acc", "value": sum(v) / len(v), "stderr": 0.1, "n": len(v)} for t, v in acc.items()]
    report = {"rows": rows, "adapter_config": {"peft_type": method} if method else None}
    (folder / "results.json").write_text(json.dumps(report))
    (folder / "item_scores.json").write_text(json.dumps(acc))
    return folder


def test_compare_puts_runs_side_by_side_with_paired_differences(tmp_path, capsys):
    base = _fake_run(tmp_path / "base", None, {"a": [1, 0, 0, 1], "b": [0, 0]})
    mor = _fake_run(tmp_path / "mor_run" / "eval", "MOR", {"a": [1, 1, 0, 1], "b": [1, 0]})
    assert compare_main([str(base), str(tmp_path / "mor_run"), "--output", str(tmp_path / "table.md")]) == 0
    table = capsys.readouterr().out
    assert "| task | base (base) | mor_run (MOR) | mor_run (MOR) - base (base) (paired) |" in table
    # task a: differences [0, 1, 0, 0] -> mean 0.25, se = sd/sqrt(4) = 0.5/2 = 0.25
    assert "| a | 0.5000 ± 0.1000 | 0.7500 ± 0.1000 | +0.2500 ± 0.2500 (n=4) |" in table
    # average of per-task differences (0.25, 0.5); se = sqrt(0.25^2 + 0.5^2) / 2
    assert "| **average** | 0.2500 | 0.6250 | +0.3750 ± 0.2795 (n=6) |" in table
    assert (tmp_path / "table.md").read_text().strip() == table.strip()
    assert mor.is_dir()
