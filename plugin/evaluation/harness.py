"""lm-evaluation-harness on a base model with (or without) one of our adapters.

lm-eval's own ``peft=`` argument loads adapters in a way that cannot see our registered types, so the bridge loads
the model itself (after ``import plugin``) and hands it to lm-eval in-process through ``HFLM(pretrained=model)``.
Scoring is lm-eval's; nothing here re-implements it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import tempfile
from pathlib import Path

import yaml

from ..models.loader import resolve_bf16
from ..models.adapter_io import load_model_with_adapter
from ..utils.errors import UserError, check_writable_folder, first_line

EVAL_DIR = Path(__file__).resolve().parents[2] / "eval"
SUITES_DIR = EVAL_DIR / "suites"  # lm-eval include path: groups and the task YAMLs lm-eval lacks
TEMPLATES_DIR = EVAL_DIR / "templates"  # offline task templates, filled per data file
SUITES = {"commonsense": ["commonsense"], "math": ["math"], "mmlu": ["mmlu"], "mor": ["mor"], "loratrf": ["loratrf"]}
# offline: which local files (in --data_dir) make up each suite
LOCAL_SUITES = {
    "commonsense": ["boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"],
    "math": ["gsm8k", "svamp", "addsub", "multiarith", "singleeq", "asdiv"],
    "mmlu": ["mmlu"],
    "mor": ["social_iqa", "piqa", "winogrande", "arc_easy", "arc_challenge", "hellaswag", "openbookqa", "lambada",
            "mmlu", "nq_open"],
    "loratrf": ["gsm8k", "addsub", "svamp", "hellaswag", "boolq", "piqa", "social_iqa"],
}
MATH_TASKS = set(LOCAL_SUITES["math"])
# per offline template: the row shape its lines must have (named in errors) and the check of one row
ROW_SHAPES = {
    "multiple_choice.yaml": ("{question, choices, label}", lambda row: isinstance(row.get("question"), str)
                             and isinstance(row.get("choices"), list) and isinstance(row.get("label"), int)
                             and 0 <= row["label"] < len(row["choices"])),
    "math.yaml": ("{question, answer}", lambda row: isinstance(row.get("question"), str) and "answer" in row),
    "lambada.yaml": ("{text}", lambda row: isinstance(row.get("text"), str) and " " in row["text"]),
    "nq_open.yaml": ("{question, answer: [aliases]}",
                     lambda row: isinstance(row.get("question"), str) and isinstance(row.get("answer"), list)),
}
TEMPLATE_OF = {"lambada": "lambada.yaml", "nq_open": "nq_open.yaml", **dict.fromkeys(MATH_TASKS, "math.yaml")}


def check_task_file(data_file: Path, template: str) -> None:
    """Each line must have the fields its template reads: lm-eval would fail deep inside with a traceback."""
    shape, fits = ROW_SHAPES[template]
    lines = [line for line in data_file.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{data_file} is empty; put one JSON object per line in it, or remove it")
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{data_file} line {number} is not JSON ({err.msg}); each line is one {shape} object") from None
        if not isinstance(row, dict) or not fits(row):
            raise UserError(f"{data_file} line {number} is not a {shape} row"
                            + (" (label an index into choices)" if "label" in shape else ""))


def write_local_tasks(data_dir: Path, include_dir: Path) -> list[str]:
    """One lm-eval task YAML per ``<task>.jsonl`` in ``data_dir``, from the templates in eval/templates/."""
    names = []
    for data_file in sorted(data_dir.glob("*.jsonl")):
        task = data_file.stem
        template = TEMPLATE_OF.get(task, "multiple_choice.yaml")
        check_task_file(data_file, template)
        text = (TEMPLATES_DIR / template).read_text()
        text = text.replace("{task}", task).replace("{data_file}", str(data_file.resolve()))
        (include_dir / f"local_{task}.yaml").write_text(text)
        names.append(task)
    return names


def resolve_tasks(suite: str | None, tasks: list[str] | None, data_dir: Path | None, include_dir: Path,
                  user_tasks: bool = False) -> list[str]:
    """The task names lm-eval gets; with ``user_tasks`` (an --include_path), names that are not local files pass
    through to lm-eval's registry."""
    if not suite and not tasks:
        raise UserError("nothing to evaluate: pass --suite (commonsense, math, mmlu) or --tasks a,b")
    if suite and suite not in SUITES:
        raise UserError(f"unknown suite '{suite}'; choose one of: {', '.join(SUITES)}")
    if data_dir is None:
        return (SUITES[suite] if suite else []) + list(tasks or [])
    if not data_dir.is_dir():
        raise UserError(f"--data_dir not found: {data_dir}")
    available = write_local_tasks(data_dir, include_dir)
    wanted = [t for t in LOCAL_SUITES[suite] if t in available] if suite else []
    for task in tasks or []:
        if task not in available and user_tasks:
            wanted.append(task)
            continue
        if task not in available:
            raise UserError(f"task '{task}' has no file {data_dir / (task + '.jsonl')}; have: {', '.join(available) or 'none'}")
        wanted.append(task)
    if not wanted:
        raise UserError(f"--data_dir {data_dir} has none of the {suite} suite's files ({', '.join(LOCAL_SUITES[suite])}.jsonl)")
    return [f"local_{t}" if t in available else t for t in wanted]


class _TaskYamlLoader(yaml.SafeLoader):
    """YAML syntax as lm-eval reads it; its tags (``!function utils.f``) need not resolve to be checked."""


_TaskYamlLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def check_task_folder(folder: str) -> set[str]:
    """Every task YAML under ``folder`` must parse (lm-eval skips a broken one with a log line, then reports its
    task as unknown); returns the task and group names the folder defines."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--include_path {folder}: folder not found; pass a folder of lm-eval task YAMLs")
    names: set[str] = set()
    for task_file in sorted(root.rglob("*.yaml")):
        try:
            config = yaml.load(task_file.read_text(encoding="utf-8"), Loader=_TaskYamlLoader)  # noqa: S506
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise UserError(f"task file {task_file} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
        if not isinstance(config, dict):
            raise UserError(f"task file {task_file} must hold a mapping of keys (task:, dataset_path:, ...)")
        names.update(n for n in (config.get("task"), config.get("group")) if isinstance(n, str))
    return names


def parse_model_args(text: str | None) -> dict:
    """lm-eval's ``--model_args`` spelling (``dtype=bfloat16,load_in_4bit=True``) for what the bridge's loading
    honours; the keys lm-eval would pass elsewhere are named in the error."""
    known = {"dtype": ("float32", "bfloat16"), "load_in_4bit": ("True", "False")}
    out = {}
    for pair in [p for p in (text or "").split(",") if p.strip()]:
        key, _, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if key not in known or value not in known[key]:
            raise UserError(f"--model_args {pair}: the bridge honours " + ", ".join(
                f"{k}={'|'.join(v)}" for k, v in known.items()) + "; for anything else use python -m plugin.lm_eval")
        out[key] = value
    return {"bf16": out.get("dtype") == "bfloat16", "load_in_4bit": out.get("load_in_4bit") == "True"}


def check_eval_settings(*, suite=None, tasks=None, limit=None, num_fewshot=None, data_dir=None, output=None,
                        include_path=(), where: str = "--") -> list[str]:
    """Every eval setting checked before anything heavy runs; returns the task names lm-eval will get."""
    if limit is not None and limit <= 0:
        raise UserError(f"{where}limit must be > 0, got {limit}")
    if num_fewshot is not None and num_fewshot < 0:
        raise UserError(f"{where}num_fewshot must be >= 0, got {num_fewshot}")
    if output is not None:
        check_writable_folder(output, f"{where}output")
    for folder in include_path:
        check_task_folder(folder)
    with tempfile.TemporaryDirectory() as include:
        return resolve_tasks(suite, tasks, Path(data_dir) if data_dir else None, Path(include), bool(include_path))


def check_task_names(task_manager, tasks: list[str]) -> None:
    known = set(task_manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown lm-eval task '{unknown[0]}'{hint}")


def run_lm_eval(model, tokenizer, tasks: list[str], include_dir: Path, *, limit=None, batch_size=8, num_fewshot=None,
                apply_chat_template=False, local_only=False, include_path=()):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # indexing lm-eval's thousands of task YAMLs takes 5-10 s: skipped when every task is local or the user's own
    user_tasks = set().union(*(check_task_folder(p) for p in include_path))
    own_only = local_only or all(t in user_tasks or t.startswith("local_") for t in tasks)
    include = ([str(include_dir)] if own_only else [str(SUITES_DIR), str(include_dir)]) + [str(p) for p in include_path]
    task_manager = TaskManager(include_path=include, include_defaults=not own_only)
    check_task_names(task_manager, tasks)
    from datasets.exceptions import DatasetNotFoundError

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        return simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=task_manager,
                               bootstrap_iters=1000, log_samples=True, apply_chat_template=apply_chat_template)
    except (ConnectionError, DatasetNotFoundError) as err:
        raise UserError(f"a task's data could not be fetched from the hub ({first_line(err)}); offline, evaluate "
                        "local files with --data_dir (e.g. data/eval, see data/README.md)") from None


def item_scores(results: dict) -> dict[str, list[float]]:
    """Per task, each item's score (acc or exact_match) in document order: what paired comparisons need."""
    scores = {}
    for task, samples in results.get("samples", {}).items():
        first_filter = samples[0].get("filter")  # math tasks score each item once per answer-extraction filter
        ordered = sorted((s for s in samples if s.get("filter") == first_filter), key=lambda s: s["doc_id"])
        metric = "acc" if "acc" in ordered[0] else "exact_match" if "exact_match" in ordered[0] else None
        if metric is not None:
            scores[task] = [float(s[metric]) for s in ordered]
    return scores


def results_rows(results: dict) -> list[dict]:
    rows = []
    n_samples = results.get("n-samples", {})
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({"task": task, "metric": metric, "value": value,
                         "stderr": stderr if isinstance(stderr, (int, float)) else None,
                         "n": n_samples.get(task, {}).get("effective")})
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| task | metric | value | stderr | n |", "|---|---|---:|---:|---:|"]
    for r in rows:
        stderr = f"{r['stderr']:.4f}" if r["stderr"] is not None else ""
        lines.append(f"| {r['task']} | {r['metric']} | {r['value']:.4f} | {stderr} | {r['n'] or ''} |")
    return "\n".join(lines)


def evaluate(base, adapter=None, *, suite=None, tasks=None, limit=None, batch_size=8, num_fewshot=None,
             load_in_4bit=False, bf16=False, data_dir=None, output=None, apply_chat_template=False,
             include_path=()) -> dict:
    with tempfile.TemporaryDirectory() as include:
        task_names = resolve_tasks(suite, tasks, Path(data_dir) if data_dir else None, Path(include),
                                   bool(include_path))
        model, tokenizer, identity = load_model_with_adapter(base, adapter, load_in_4bit, bf16)
        results = run_lm_eval(model, tokenizer, task_names, Path(include), limit=limit, batch_size=batch_size,
                              num_fewshot=num_fewshot, apply_chat_template=apply_chat_template,
                              local_only=data_dir is not None, include_path=include_path)
    rows = results_rows(results)
    import lm_eval

    report = {
        **identity,
        "suite": suite, "tasks": task_names, "include_path": list(map(str, include_path)), "limit": limit,
        "num_fewshot": num_fewshot, "data_dir": data_dir,
        "apply_chat_template": apply_chat_template,
        "lm_eval_version": lm_eval.__version__, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "rows": rows,
    }
    table = markdown_table(rows)
    print("\n" + table)
    if output:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
        (out / "item_scores.json").write_text(json.dumps(item_scores(results)))
        header = f"# lm-eval results\n\nbase: `{base}`  \nadapter: `{adapter}`  \nlimit: {limit}\n\n"
        (out / "results.md").write_text(header + table + "\n")
        print(f"\nresults written to {out}/results.json and results.md")
    return report


def check_eval_section(spec) -> None:
    """A training YAML's ``eval:`` section (an ``EvalSpec``), checked as ``plugin.eval`` checks its flags."""
    settings = dataclasses.asdict(spec)
    check_eval_settings(**{key: settings[key] for key in ("suite", "tasks", "limit", "num_fewshot", "data_dir",
                                                          "output")}, where="eval: ")


def evaluate_from_train_config(cfg, adapter_dir: Path) -> dict:
    """The ``eval:`` section of a training YAML, run on the adapter just trained (its keys are ``evaluate``'s)."""
    settings = {**dataclasses.asdict(cfg.eval), "output": cfg.eval.output or str(adapter_dir / "eval")}
    return evaluate(cfg.base_model, str(adapter_dir), load_in_4bit=cfg.load_in_4bit, bf16=resolve_bf16(cfg.bf16),
                    **settings)
