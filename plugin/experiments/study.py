"""A study (``python -m plugin.study CONFIG``): every method, same data and budget, one results table.

For each run x target set x seed, one ``plugin.train`` process (so its peak memory is its own) trains and then
scores the adapter on held-out items through the eval bridge (its ``eval:`` section). Finished runs are never
redone: rerunning the command continues an interrupted study. Writes ``<output_dir>/RESULTS.md``, ``results.json``
and ``accuracy.png`` (accuracy per method, and its paired difference to LoRA on the same items).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..data.benchmarks import as_chat, load_items, write_jsonl
from ..config.loader import load_config
from ..utils.errors import UserError, check_writable_folder
from ..evaluation.harness import evaluate
from ..evaluation.statistics import paired_difference
from .matching import adapter_parameter_count, matched_lora_keys
from ..training.run_dir import is_finished

COMMON_KEYS = {"base_model", "output_dir", "seeds", "train", "targets", "target_sets", "runs"}
# causal LM study: chat training mixture, lm-eval multiple choice on held-out items
STUDY_KEYS = COMMON_KEYS | {"train_tasks", "train_items", "eval_tasks", "eval_start", "eval_items", "eval_batch_size",
                            "eval_chat_template"}
# task: sequence_classification study: each GLUE task trained and scored on its own held-out rows
GLUE_STUDY_KEYS = COMMON_KEYS | {"task", "glue_tasks"}


def is_glue(study: dict) -> bool:
    return study.get("task") == "sequence_classification"


def study_tasks(study: dict) -> list[str]:
    return study["glue_tasks"] if is_glue(study) else study["eval_tasks"]


def load_study(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"study config not found: {path}")
    try:
        study = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(study, dict):
        raise UserError(f"{path} must hold a mapping of study keys, got {type(study).__name__}")
    keys = GLUE_STUDY_KEYS if is_glue(study) else STUDY_KEYS
    unknown = sorted(set(study) - keys)
    if unknown:
        raise UserError(f"unknown study key '{unknown[0]}'; known: {', '.join(sorted(keys))}")
    missing = sorted(keys - set(study))
    if missing:
        raise UserError(f"study config is missing '{missing[0]}'")
    if is_glue(study):
        from ..data.benchmarks import GLUE_TASKS

        bad = [t for t in study["glue_tasks"] if t not in GLUE_TASKS]
        if bad:
            raise UserError(f"glue_tasks: no offline data for '{bad[0]}'; known: {', '.join(GLUE_TASKS)}")
    elif study["eval_start"] < study["train_items"]:
        raise UserError("eval_start must be >= train_items: never evaluate on trained items")
    for target_set in study["target_sets"]:
        if target_set not in study["targets"]:
            raise UserError(f"target set '{target_set}' is not defined under 'targets'")
    for run in study["runs"]:
        _check_run(study, run)
    return study


def _check_run(study: dict, run) -> None:
    """A run entry is validated like a training YAML: a misspelt key must not turn a method into the base model."""
    if not isinstance(run, dict) or "name" not in run:
        raise UserError(f"each entry of 'runs' needs a 'name' (and training keys such as adapter), got {run!r}")
    keys = {k: v for k, v in run.items() if k not in ("name", "match_params")}
    if "match_params" in run:
        _check_match(study, run)
    if not keys and is_glue(study):
        raise UserError(f"study run '{run['name']}' has no adapter: an untrained classifier head scores chance; use "
                        "adapter: full for the full fine-tuning ceiling")
    if not keys:
        return  # the base model
    task = {"task": study["task"]} if is_glue(study) else {}
    try:
        load_config(None, {**study["train"], **keys, **task, "datasets": [{"path": "train.jsonl"}]})
    except UserError as err:
        raise UserError(f"study run '{run['name']}': {err}") from None
    if "adapter" not in keys:
        raise UserError(f"study run '{run['name']}' sets training keys but no adapter; add adapter: lora|mplora|mor|"
                        "loratrf (a run with only a name is the base model)")


def _check_match(study: dict, run: dict) -> None:
    matched = next((r for r in study["runs"] if r["name"] == run["match_params"]), None)
    if run.get("adapter") != "lora":
        raise UserError(f"study run '{run['name']}': match_params sets a LoRA's rank; add adapter: lora")
    if matched is None or matched.get("adapter") in (None, "full"):
        names = [r["name"] for r in study["runs"] if r.get("adapter") not in (None, "full")]
        raise UserError(f"study run '{run['name']}': match_params '{run['match_params']}' names no adapter run of this "
                        f"study; one of: {', '.join(names)}")


def prepare_data(study: dict, root: Path) -> tuple[Path, Path]:
    """Training mixture (first train_items of each task) and held-out eval files (from eval_start on); for a GLUE
    study, data/glue/<task>/{train,test}.jsonl (plugin.benchmark_data.glue_split) and no mixture."""
    if is_glue(study):
        from ..data.benchmarks import glue_split

        for task in study["glue_tasks"]:
            if not (root / "data" / "glue" / task / "test.jsonl").is_file():
                for name, rows in zip(("train", "test"), glue_split(task)):
                    write_jsonl(rows, root / "data" / "glue" / task / f"{name}.jsonl")
        return root / "data" / "glue", root / "data" / "glue"
    train_file, eval_dir = root / "data" / "train.jsonl", root / "data" / "eval"
    if not train_file.is_file():
        rows = [as_chat(item) for task in study["train_tasks"] for item in load_items(task, 0, study["train_items"])]
        write_jsonl(rows, train_file)
    for task in study["eval_tasks"]:
        if not (eval_dir / f"{task}.jsonl").is_file():
            items = load_items(task, study["eval_start"], study["eval_start"] + study["eval_items"])
            if not items:
                raise UserError(f"{task} has no items from {study['eval_start']} on; drop it from eval_tasks")
            write_jsonl(items, eval_dir / f"{task}.jsonl")
    return train_file, eval_dir


def run_plan(study: dict) -> list[dict]:
    plan = []
    for run in study["runs"]:
        adapter = run.get("adapter")
        target_sets = study["target_sets"] if adapter not in (None, "full") else ["-"]  # full adapts no target
        seeds = study["seeds"] if adapter else [study["seeds"][0]]  # the base model has no seed
        for target_set in target_sets:
            for seed in seeds:
                plan.append({"run": run, "target_set": target_set, "seed": seed,
                             "id": f"{run['name']}__{target_set}__s{seed}"})
    return plan


def _targets(study: dict, target_set: str, adapter: str) -> list[str]:
    chosen = study["targets"][target_set]
    return chosen[adapter] if isinstance(chosen, dict) else chosen


def _training_keys(study: dict, item: dict) -> dict:
    """The run's plugin.train keys, data and output aside: the shared budget, the run's own keys, its targets, and a
    ``match_params`` run's LoRA rank (equal adapter parameters to the named run at the same targets)."""
    run = item["run"]
    keys = {**study["train"], **{k: v for k, v in run.items() if k not in ("name", "match_params")},
            **({"task": study["task"]} if is_glue(study) else {}), "base_model": study["base_model"],
            "seed": item["seed"]}
    if run.get("adapter") in (None, "full"):
        return keys
    keys["lora_target_modules"] = _targets(study, item["target_set"], run["adapter"])
    if "match_params" in run:
        matched = next(r for r in study["runs"] if r["name"] == run["match_params"])
        target = adapter_parameter_count(study["base_model"], _training_keys(study, {**item, "run": matched}))
        keys.update(matched_lora_keys(study["base_model"], keys, target, f"study run '{run['name']}'"))
    return keys


def _adapter_params(study: dict, item: dict) -> int | None:
    if item["run"].get("adapter") in (None, "full"):
        return None
    return adapter_parameter_count(study["base_model"], _training_keys(study, item))


def _run(cmd: list[str], run_id: str) -> None:
    done = subprocess.run(cmd)
    if done.returncode:
        raise UserError(f"run {run_id} failed (exit {done.returncode}; its output is above); fix the cause and rerun "
                        "the same command: finished runs are kept")


def _eval_keys(study: dict, eval_dir: Path, output: Path) -> dict:
    """One set of eval settings: the training YAML's ``eval:`` section and ``plugin.eval.evaluate``'s keywords."""
    return {"tasks": study["eval_tasks"], "data_dir": str(eval_dir), "batch_size": study["eval_batch_size"],
            "apply_chat_template": study["eval_chat_template"], "output": str(output)}


def _execute_glue(study: dict, item: dict, run_dir: Path, data_dir: Path) -> dict:
    """One run of a GLUE study: each task trained in its own plugin.train process and scored on its held-out rows
    (accuracy, each row's outcome kept for paired differences)."""
    acc, stderr, items, costs = {}, {}, {}, []
    for task in study["glue_tasks"]:
        out = run_dir / task
        keys = {**_training_keys(study, item), "output_dir": str(out),
                "datasets": [{"path": str(data_dir / task / "train.jsonl")}],
                "test_datasets": [{"path": str(data_dir / task / "test.jsonl")}]}
        (run_dir / f"{task}.yaml").write_text(yaml.safe_dump(keys, sort_keys=False))
        if not is_finished(out):
            _run([sys.executable, "-m", "plugin.train", str(run_dir / f"{task}.yaml")], f"{item['id']} ({task})")
        correct = json.loads((out / "eval_items.json").read_text())["correct"]
        acc[task] = statistics.mean(correct)
        stderr[task] = math.sqrt(acc[task] * (1 - acc[task]) / len(correct))
        items[task] = correct
        costs.append(json.loads((out / "run_summary.json").read_text()))
    return {"trainable_params": costs[0]["trainable_params"], "step_time_s": _mean([c["step_time_s"] for c in costs]),
            "peak_memory_mb": max(c["peak_memory_mb"] for c in costs), "acc": acc, "stderr": stderr, "items": items}


def execute(study: dict, item: dict, root: Path, train_file: Path, eval_dir: Path) -> dict:
    run_dir = root / "runs" / item["id"]
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():  # finished before: never redone
        return json.loads(summary_file.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary = (_execute_glue(study, item, run_dir, eval_dir) if is_glue(study)
               else _execute_lm(study, item, run_dir, train_file, eval_dir))
    summary.update(id=item["id"], name=item["run"]["name"], target_set=item["target_set"], seed=item["seed"],
                   wall_s=time.monotonic() - started, adapter_params=_adapter_params(study, item))
    summary_file.write_text(json.dumps(summary))
    return summary


def _execute_lm(study: dict, item: dict, run_dir: Path, train_file: Path, eval_dir: Path) -> dict:
    """One run of a causal LM study: one process trains and scores the adapter (the base model is only scored)."""
    run, eval_out = item["run"], run_dir / "eval"
    summary: dict = {}
    eval_keys = _eval_keys(study, eval_dir, eval_out)
    if run.get("adapter"):
        adapter_dir = run_dir / "adapter"
        keys = {**_training_keys(study, item), "output_dir": str(adapter_dir),
                "datasets": [{"path": str(train_file), "type": "messages"}],
                "eval": eval_keys}
        (run_dir / "train.yaml").write_text(yaml.safe_dump(keys, sort_keys=False))
        if not is_finished(adapter_dir):  # one process trains, then scores the adapter
            _run([sys.executable, "-m", "plugin.train", str(run_dir / "train.yaml")], item["id"])
        if not (eval_out / "item_scores.json").is_file():  # interrupted between training and scoring
            evaluate(study["base_model"], str(adapter_dir), **eval_keys)
        summary = json.loads((adapter_dir / "run_summary.json").read_text())
    else:  # the base model: nothing trained, so no peak memory of its own to keep apart
        evaluate(study["base_model"], **eval_keys)
    rows = json.loads((eval_out / "results.json").read_text())["rows"]
    items = json.loads((eval_out / "item_scores.json").read_text())
    summary.update(acc={r["task"].removeprefix("local_"): r["value"] for r in rows if r["metric"] == "acc"},
                   stderr={r["task"].removeprefix("local_"): r["stderr"] for r in rows if r["metric"] == "acc"},
                   items={task.removeprefix("local_"): scores for task, scores in items.items()})
    return summary


def _item_means(runs: list[dict], tasks: list[str]) -> dict[str, list[float]]:
    """Per task, each held-out item's score averaged over the seeds."""
    return {t: [statistics.mean(col) for col in zip(*(r["items"][t] for r in runs))] for t in tasks}


def aggregate(summaries: list[dict], tasks: list[str], matched: dict[str, str] | None = None) -> list[dict]:
    """One row per run x target set; ``matched``: run name -> the name of the LoRA with its adapter parameters."""
    matched = matched or {}
    equal_size_of = {twin: method for method, twin in matched.items()}
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        groups.setdefault((s["name"], s["target_set"]), []).append(s)
    item_means = {key: _item_means(runs, tasks) for key, runs in groups.items()}
    base = next((means for (name, _), means in item_means.items() if name == "base"), None)
    loras = [means for (name, _), means in item_means.items() if name == "lora"]
    table = []
    for (name, target_set), runs in groups.items():
        per_task = {t: [r["acc"][t] for r in runs] for t in tasks}
        averages = [statistics.mean(r["acc"][t] for t in tasks) for r in runs]
        # a run without target set (full fine-tuning) is compared with LoRA where the study has only one LoRA
        lora = item_means.get(("lora", target_set)) or (loras[0] if len(loras) == 1 and name != "base" else None)
        table.append({
            "name": name, "target_set": target_set, "seeds": len(runs),
            "trainable_params": runs[0].get("trainable_params"), "adapter_params": runs[0].get("adapter_params"),
            "step_time_s": _mean([r.get("step_time_s") for r in runs]),
            "peak_memory_mb": _mean([r.get("peak_memory_mb") for r in runs]),
            "wall_s": _mean([r.get("wall_s") for r in runs]),
            "tasks": {t: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else None) for t, v in per_task.items()},
            "average": (statistics.mean(averages), statistics.stdev(averages) if len(averages) > 1 else None),
            "vs_lora": paired_difference(item_means[name, target_set], lora) if lora and name != "lora" else None,
            "vs_base": paired_difference(item_means[name, target_set], base) if base and name != "base" else None,
            "equal_size_of": equal_size_of.get(name),
            "vs_matched": (paired_difference(item_means[name, target_set], item_means[twin, target_set])
                           if (twin := matched.get(name)) and (twin, target_set) in item_means else None),
        })
    return table


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _fmt(mean_std) -> str:
    mean, std = mean_std
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def _fmt_diff(diff) -> str:
    if diff is None:
        return ""
    mean, se = diff
    flag = " *" if abs(mean) > 2 * se > 0 else ""  # beyond two paired standard errors
    return f"{round(100 * mean, 1) + 0.0:+.1f} ± {100 * se:.1f}{flag}"  # + 0.0: no "-0.0"


def markdown(table: list[dict], tasks: list[str]) -> str:
    with_base = any(row["name"] == "base" for row in table)
    with_matched = any(row.get("vs_matched") for row in table)
    head = ("| method | targets | seeds | trainable | adapter | s/step | peak MB | " + " | ".join(tasks)
            + " | average | Δ vs LoRA |" + (" Δ vs equal-size LoRA |" if with_matched else "")
            + (" Δ vs base |" if with_base else ""))
    lines = [head, "|" + "---|" * (9 + with_matched + with_base + len(tasks))]
    for row in table:
        params = f"{row['trainable_params']:,}" if row["trainable_params"] else "0"
        adapter = f"{row['adapter_params']:,}" if row.get("adapter_params") else ""
        step = f"{row['step_time_s']:.2f}" if row["step_time_s"] else ""
        mem = f"{row['peak_memory_mb']:.0f}" if row["peak_memory_mb"] else ""
        cells = " | ".join(_fmt(row["tasks"][t]) for t in tasks)
        lines.append(f"| {row['name']} | {row['target_set']} | {row['seeds']} | {params} | {adapter} | {step} | {mem} | "
                     f"{cells} | "
                     f"**{_fmt(row['average'])}** | {_fmt_diff(row['vs_lora'])} |"
                     + (f" {_fmt_diff(row.get('vs_matched'))} |" if with_matched else "")
                     + (f" {_fmt_diff(row['vs_base'])} |" if with_base else ""))
    return "\n".join(lines)


def bar_plot(table: list[dict], path: Path) -> Path:
    """Left: average accuracy per method (error bars: std over seeds). Right: paired difference to LoRA on the
    same items with a 95% interval, where 'helps or not' is read off."""
    import matplotlib.pyplot as plt

    labels = [f"{r['name']} ({r['target_set']})" if r["target_set"] != "-" else r["name"] for r in table]
    colors = ["gray" if r["target_set"] == "-" else "tab:blue" if r["name"] == "lora"
              else "lightskyblue" if r.get("equal_size_of") else "tab:orange" if r["target_set"] == "paper"
              else "tab:green" for r in table]
    means = [100 * r["average"][0] for r in table]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(4.5, 0.32 * len(table) + 1.5)), sharey=True)
    rows = range(len(table))
    left.barh(rows, means, xerr=[100 * (r["average"][1] or 0) for r in table], capsize=3, color=colors)
    base = next((m for r, m in zip(table, means) if r["name"] == "base"), None)
    if base is not None:
        left.axvline(base, color="gray", ls="--", lw=1)
    left.set_xlim(min(means) - 5, max(means) + 5)
    left.set_yticks(rows, labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("average accuracy (%) over held-out tasks; bars: std over seeds")
    for key, shift, style, label in [("vs_lora", 0, dict(fmt="o", color="black"), "vs LoRA"),
                                     ("vs_matched", 0.2, dict(fmt="s", color="tab:red", mfc="none"),
                                      "vs equal-size LoRA")]:
        diffs = [r.get(key) for r in table]
        if any(diffs):
            right.errorbar([100 * d[0] if d else float("nan") for d in diffs], [i + shift for i in rows],
                           xerr=[196 * d[1] if d else 0 for d in diffs], capsize=3, label=label, **style)
    if any(r.get("vs_matched") for r in table):
        right.legend(fontsize=8)
    right.axvline(0, color="tab:blue", lw=1)
    right.set_xlabel("difference to LoRA, same items (points; 95% interval)")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="x")
    legend = [text for color, text in [("gray", "gray: no adapter"), ("tab:orange", "orange: papers' targets"),
                                       ("tab:green", "green: shared targets"),
                                       ("lightskyblue", "light blue: LoRA of a method's size")] if color in colors]
    fig.suptitle(f"Study: average accuracy per method ({', '.join(legend)})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_study(config: Path, only: str | None = None) -> Path:
    """Run every unfinished run of the study (those whose id contains ``only``), then write the table and plot of
    every finished run; returns the study's output folder."""
    study = load_study(config)
    root = Path(study["output_dir"])
    check_writable_folder(root, "study output_dir")
    train_file, eval_dir = prepare_data(study, root)
    full_plan = run_plan(study)
    plan = [i for i in full_plan if not only or only in i["id"]]
    for item in plan:  # a LoRA matched to a run's parameters is sized before anything trains (one line if it can't)
        _adapter_params(study, item)
    for number, item in enumerate(plan, 1):
        print(f"[study] {number}/{len(plan)} {item['id']}", flush=True)
        execute(study, item, root, train_file, eval_dir)
    # the table covers every finished run, also those of earlier (e.g. --only) invocations
    finished = [root / "runs" / i["id"] / "summary.json" for i in full_plan]
    summaries = [json.loads(f.read_text()) for f in finished if f.is_file()]
    matched = {run["match_params"]: run["name"] for run in study["runs"] if "match_params" in run}
    table = aggregate(summaries, study_tasks(study), matched)
    (root / "results.json").write_text(json.dumps(table, indent=1))
    text = markdown(table, study_tasks(study))
    hours = sum(s.get("wall_s") or 0 for s in summaries) / 3600
    note = (f"{len(summaries)} of {len(full_plan)} runs finished, {hours:.2f} h of run time in all. Δ columns: paired "
            "difference on the same items (points ± standard error; * beyond 2 SE).")
    (root / "RESULTS.md").write_text(f"# Study results\n\nconfig: `{config}`\n\n{note}\n\n{text}\n")
    print("\n" + text + f"\n\n{note}\n{bar_plot(table, root / 'accuracy.png')}")
    return root
