"""Evaluated runs side by side (base vs adapters): each task's score with its stderr, and each run's paired
difference from the first on the items both scored (``statistics.paired_difference``: both runs answered the same
questions, so the per-item differences give a far tighter error than two unpaired stderrs)."""

from __future__ import annotations

import json
from pathlib import Path

from ..utils.errors import UserError
from .statistics import paired_difference

PRIMARY_METRICS = ("acc", "exact_match")  # what the papers report; item_scores.json holds the same metric


def load_run(folder: Path) -> dict:
    """An eval output folder (results.json + item_scores.json), or a training output_dir holding one in eval/."""
    for candidate in (folder, folder / "eval"):
        if (candidate / "results.json").is_file() and (candidate / "item_scores.json").is_file():
            try:
                report = json.loads((candidate / "results.json").read_text())
                items = json.loads((candidate / "item_scores.json").read_text())
            except ValueError as err:
                raise UserError(f"{candidate} holds an unreadable results file ({err}); evaluate it again") from None
            method = (report.get("adapter_config") or {}).get("peft_type", "base")
            return {"label": f"{folder.name} ({method})", "rows": report["rows"], "items": items}
    raise UserError(f"{folder} has no results.json and item_scores.json (nor in {folder / 'eval'}); evaluate it with "
                    "python -m plugin.eval --output DIR first")


def primary_scores(run: dict) -> dict[str, tuple[float, float | None]]:
    """Per task: (value, stderr) of its first primary metric."""
    out = {}
    for metric in reversed(PRIMARY_METRICS):  # acc wins where a task has both
        for row in run["rows"]:
            if row["metric"] == metric:
                out[row["task"]] = (row["value"], row["stderr"])
    return out


def _cell(value: float, stderr: float | None) -> str:
    return f"{value:.4f} ± {stderr:.4f}" if stderr is not None else f"{value:.4f}"


def compare_table(runs: list[dict]) -> str:
    scores = [primary_scores(r) for r in runs]
    tasks = [t for t in scores[0] if all(t in s for s in scores[1:])]
    if not tasks:
        raise UserError("the runs share no task; evaluate them on the same tasks")
    reference = runs[0]
    header = ["task", *(r["label"] for r in runs), *(f"{r['label']} - {reference['label']} (paired)" for r in runs[1:])]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    def shared(run, task_list):  # items scored by both runs: the common prefix in document order
        pairs = {t: min(len(run["items"].get(t, [])), len(reference["items"].get(t, []))) for t in task_list}
        return ({t: run["items"][t][:n] for t, n in pairs.items() if n},
                {t: reference["items"][t][:n] for t, n in pairs.items() if n})

    for task in [*tasks, None]:  # None: the average over tasks
        cells = [f"{sum(s[t][0] for t in tasks) / len(tasks):.4f}" for s in scores] if task is None \
            else [_cell(*s[task]) for s in scores]
        for run in runs[1:]:
            ours, ref = shared(run, tasks if task is None else [task])
            diff, se = paired_difference(ours, ref) if ours else (None, None)
            cells.append(f"{diff:+.4f} ± {se:.4f} (n={sum(map(len, ours.values()))})" if ours else "")
        lines.append(f"| {task or '**average**'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
