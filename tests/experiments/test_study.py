"""The reproduction study runner: real data splits, every run trained and scored once, resumable."""

import json

import pytest
import yaml

from plugin.evaluation.statistics import paired_difference
from plugin.experiments.study import load_study, run_plan
from plugin.study import main

from ..helpers import REPO, make_tiny_bert_dir

STUDY = REPO / "configs" / "study_smollm2.yaml"


def test_shipped_study_config_and_plan():
    study = load_study(STUDY)
    plan = run_plan(study)
    adapter_runs = [r for r in study["runs"] if r.get("adapter")]
    assert len(plan) == 1 + len(adapter_runs) * len(study["target_sets"]) * len(study["seeds"])
    assert study["eval_start"] >= study["train_items"]  # never evaluate on trained items
    names = {r["name"] for r in study["runs"]}
    assert {"base", "lora", "mplora_n2", "mplora_n2_no_orth", "mplora_n4", "mor_n1", "mor_n4", "mor_n8",
            "loratrf_output", "loratrf_input"} <= names


@pytest.mark.slow
def test_tiny_study_runs_once_and_resumes(tmp_path, tiny_model_dir, capsys):
    study = yaml.safe_load(STUDY.read_text())
    study.update(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "study"), seeds=[1],
                 train_tasks=["arc_easy", "piqa"], train_items=8, eval_tasks=["arc_easy", "piqa"], eval_items=4,
                 target_sets=["shared"], runs=[{"name": "base"}, {"name": "lora", "adapter": "lora"},
                                               {"name": "mor_n2", "adapter": "mor", "mor_num_experts": 2}])
    study["train"].update(max_steps=2, micro_batch_size=2, sequence_len=128)
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(study))
    assert main([str(cfg)]) == 0
    root = tmp_path / "study"
    train_rows = (root / "data" / "train.jsonl").read_text().splitlines()
    assert len(train_rows) == 16
    held_out = [json.loads(line)["question"] for line in (root / "data" / "eval" / "piqa.jsonl").read_text().splitlines()]
    assert len(held_out) == 4 and not any(q in "\n".join(train_rows) for q in held_out)
    results = json.loads((root / "results.json").read_text())
    assert {(r["name"], r["target_set"]) for r in results} == {("base", "-"), ("lora", "shared"), ("mor_n2", "shared")}
    mor = next(r for r in results if r["name"] == "mor_n2")
    assert mor["trainable_params"] > 0 and mor["step_time_s"] > 0 and mor["peak_memory_mb"] > 0
    # trained and scored in one process: the adapter's eval sits in the run folder, per item
    scores = {name: json.loads((root / "runs" / run_id / "eval" / "item_scores.json").read_text())
              for name, run_id in [("mor", "mor_n2__shared__s1"), ("lora", "lora__shared__s1")]}
    diffs = [[m - lo for m, lo in zip(scores["mor"][t], scores["lora"][t])] for t in ("local_arc_easy", "local_piqa")]
    assert mor["vs_lora"][0] == pytest.approx((sum(diffs[0]) / 4 + sum(diffs[1]) / 4) / 2)
    assert "| mor_n2 | shared | 1 |" in (root / "RESULTS.md").read_text()
    assert (root / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("runs/*/summary.json")}
    assert main([str(cfg)]) == 0  # a second run redoes nothing
    assert {p: p.stat().st_mtime_ns for p in root.glob("runs/*/summary.json")} == stamps


def test_paired_difference_by_hand():
    # task a: differences (1, 0, 0, -1) -> mean 0, variance 2/3; task b: (1, 1) -> mean 1, variance 0
    ours = {"a": [1, 1, 0, 0], "b": [1, 1]}
    reference = {"a": [0, 1, 0, 1], "b": [0, 0]}
    mean, se = paired_difference(ours, reference)
    assert mean == pytest.approx(0.5)  # average of the two task means
    assert se == pytest.approx(((2 / 3) / 4 + 0) ** 0.5 / 2)


def test_study_config_errors(tmp_path, capsys):
    bad = yaml.safe_load(STUDY.read_text())
    bad["eval_start"] = 10
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "bad.yaml")])
    assert exit_info.value.code == 2 and "never evaluate on trained items" in capsys.readouterr().err


@pytest.mark.slow
def test_failed_run_stops_the_study_with_one_line(tmp_path, tiny_model_dir, capsys):
    study = yaml.safe_load(STUDY.read_text())
    study.update(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "study"), seeds=[1],
                 train_tasks=["piqa"], train_items=4, eval_tasks=["piqa"], eval_items=2, target_sets=["shared"],
                 runs=[{"name": "broken", "adapter": "mor", "chat_template": "{% for m in messages %}"}])  # fails only when run
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "study.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("error: run broken__shared__s1 failed (exit 2")
    assert not (tmp_path / "study" / "runs" / "broken__shared__s1" / "summary.json").exists()


GLUE_STUDY = REPO / "configs" / "study_glue_minilm.yaml"


def test_glue_study_config_and_plan():
    study = load_study(GLUE_STUDY)
    plan = run_plan(study)
    adapters = [r for r in study["runs"] if r["adapter"] != "full"]
    assert len(plan) == len(study["seeds"]) * (1 + len(adapters) * len(study["target_sets"]))
    assert len(study["seeds"]) >= 3 and {"full", "lora", "mplora_n2", "mor_n8", "loratrf_input"} <= {
        r["name"] for r in study["runs"]}


@pytest.mark.slow
def test_tiny_glue_study_runs_and_pairs_each_row(tmp_path):
    study = yaml.safe_load(GLUE_STUDY.read_text())
    study.update(base_model=str(make_tiny_bert_dir(tmp_path / "bert")), output_dir=str(tmp_path / "study"), seeds=[1],
                 glue_tasks=["rte"], runs=[{"name": "lora", "adapter": "lora"},
                                           {"name": "mor_n4", "adapter": "mor", "mor_num_experts": 4},
                                           {"name": "lora_like_mor", "adapter": "lora", "match_params": "mor_n4"},
                                           {"name": "full", "adapter": "full"}])
    study["targets"] = {"paper": ["query", "value"]}
    study["train"].update(max_steps=2, micro_batch_size=4, sequence_len=64, max_samples=16)
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(study))
    assert main([str(cfg)]) == 0
    root = tmp_path / "study"
    assert len((root / "data" / "glue" / "rte" / "test.jsonl").read_text().splitlines()) == 93
    items = {name: json.loads((root / "runs" / run_id / "rte" / "eval_items.json").read_text())["correct"]
             for name, run_id in [("lora", "lora__paper__s1"), ("mor_n4", "mor_n4__paper__s1"),
                                  ("full", "full__-__s1")]}
    results = {r["name"]: r for r in json.loads((root / "results.json").read_text())}
    assert results["lora"]["tasks"]["rte"][0] == pytest.approx(sum(items["lora"]) / 93)
    diffs = [a - b for a, b in zip(items["mor_n4"], items["lora"])]
    assert results["mor_n4"]["vs_lora"][0] == pytest.approx(sum(diffs) / 93)
    # full fine-tuning has no target set: it is paired with the study's one LoRA
    diffs = [a - b for a, b in zip(items["full"], items["lora"])]
    assert results["full"]["vs_lora"][0] == pytest.approx(sum(diffs) / 93)
    report = (root / "RESULTS.md").read_text()
    assert "| mor_n4 | paper | 1 |" in report and "Δ vs base" not in report  # no base model run, no column
    # the matched LoRA trained as many adapter parameters as MoR (SPEC 2: (d_in + d_out) r + N (d_in + d_out + r)
    # per layer; tiny BERT's q and v are 32 -> 32 in 2 layers, r 8), at a higher rank
    mor = 4 * (64 * 8 + 4 * (64 + 8))
    assert results["mor_n4"]["adapter_params"] == mor and results["lora"]["adapter_params"] == 4 * 64 * 8
    run = root / "runs" / "lora_like_mor__paper__s1" / "rte"
    head = json.loads((root / "runs" / "lora__paper__s1" / "rte" / "run_summary.json").read_text())[
        "trainable_params"] - 4 * 64 * 8  # classifier head and pooler, the same for every method
    trained = json.loads((run / "run_summary.json").read_text())["trainable_params"] - head
    assert abs(trained - mor) <= 0.05 * mor and results["lora_like_mor"]["adapter_params"] == trained
    saved = json.loads((run / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["r"] == 12
    twin = json.loads((run / "eval_items.json").read_text())["correct"]
    diffs = [a - b for a, b in zip(items["mor_n4"], twin)]  # the method against the LoRA of its size, row by row
    assert results["mor_n4"]["vs_matched"][0] == pytest.approx(sum(diffs) / 93)
    assert results["lora_like_mor"]["equal_size_of"] == "mor_n4" and "Δ vs equal-size LoRA" in report

