"""Pictures of a training run (``python -m plugin.plot OUT_DIR``).

- ``router_weights.png`` (MoR, in the style of the MoR paper's Fig. 7): for one layer, the distribution over
  tokens of each expert's router weight on chosen texts (box per expert, mean marked).
- ``router_entropy.png`` (MoR): mean per-token router entropy per layer over training steps.
- ``orthogonality.png`` (MPLoRA): the orthogonality loss per layer and in total over training steps.
- ``rewards.png`` (rl: runs): the implicit rewards of the chosen and rejected answers, their margin and how often
  chosen wins (DPO, IPO, ORPO, SimPO; KTO without the last), or GRPO's mean reward and its spread, over steps.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import yaml

from ..config.schema import RESOLVED_CONFIG_FILE
from ..utils.errors import UserError, check_writable_folder

DEFAULT_TEXTS = Path(__file__).resolve().parents[2] / "data" / "eval" / "arc_easy.jsonl"


def read_telemetry(out_dir: Path) -> list[dict]:
    path = out_dir / "telemetry.jsonl"
    if not path.is_file():
        return []
    by_step = {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):  # a resumed run re-logs some steps: keep the last
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the line a killed run was writing
                print(f"note: {path} ends in a half-written line (a killed run?); it is ignored", file=sys.stderr)
                break
            raise UserError(f"{path} line {number} is not JSON; was the file edited?") from None
        by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def _curves(rows: list[dict], key: str) -> dict[str, tuple[list[int], list[float]]]:
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        for layer, value in row.get(key, {}).items():
            steps, values = curves.setdefault(layer, ([], []))
            steps.append(row["step"])
            values.append(value)
    return curves


def plot_curves(rows: list[dict], key: str, title: str, ylabel: str, path: Path, total: bool,
                reference: tuple[float, str] | None = None) -> Path | None:
    import matplotlib.pyplot as plt

    curves = _curves(rows, key)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for layer, (steps, values) in curves.items():
        ax.plot(steps, values, lw=0.8, alpha=0.5)
    logged = [r for r in rows if r.get(key)]
    combined = [sum(r[key].values()) / (1 if total else len(r[key])) for r in logged]
    ax.plot([r["step"] for r in logged], combined, color="black", lw=2,
            label="sum over layers" if total else "mean over layers")
    if reference is not None:
        ax.axhline(reference[0], color="gray", ls="--", lw=1, label=reference[1])
    ax.legend()
    if total and all(v > 0 for _, values in curves.values() for v in values):
        ax.set_yscale("log")  # per-layer values sit orders of magnitude below their sum
    ax.set(title=f"{title} ({len(curves)} layers, thin lines)", xlabel="optimiser step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


REWARD_CURVES = [("rewards/chosen", "chosen"), ("rewards/rejected", "rejected"), ("rewards/margins", "margin"),
                 ("reward", "mean reward"), ("reward_std", "reward std")]


def plot_rewards(out_dir: Path, path: Path) -> Path | None:
    """The rewards TRL's preference and RL trainers log (``train_metrics.json``), over optimiser steps."""
    import matplotlib.pyplot as plt

    metrics = out_dir / "train_metrics.json"
    logged = [row for row in json.loads(metrics.read_text()) if "loss" in row] if metrics.is_file() else []
    curves = [(key, label) for key, label in REWARD_CURVES if any(key in row for row in logged)]
    if not curves:
        return None
    accuracy = any("rewards/accuracies" in row for row in logged)
    fig, axes = plt.subplots(1, 2 if accuracy else 1, figsize=(12 if accuracy else 8, 4.5), squeeze=False)
    for key, label in curves:
        rows = [row for row in logged if key in row]
        axes[0][0].plot([row["step"] for row in rows], [float(row[key]) for row in rows], marker=".", label=label)
    axes[0][0].axhline(0, color="gray", lw=0.8)
    axes[0][0].set(title="rewards", xlabel="optimiser step", ylabel="reward")
    axes[0][0].legend()
    if accuracy:
        rows = [row for row in logged if "rewards/accuracies" in row]
        axes[0][1].plot([row["step"] for row in rows], [float(row["rewards/accuracies"]) for row in rows], marker=".")
        axes[0][1].axhline(0.5, color="gray", ls="--", lw=1, label="chance")
        axes[0][1].set(title="chosen rewarded above rejected", xlabel="optimiser step", ylabel="fraction of pairs",
                       ylim=(-0.02, 1.02))
        axes[0][1].legend()
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def router_gates_on_texts(out_dir: Path, layer: str | None, texts: list[str]):
    """(layer name, tokens x N gates) of one MoR layer of the trained model on ``texts``."""
    import torch

    from ..tuners.auxiliary import adapter_layers
    from ..models.adapter_io import load_model_with_adapter
    from ..tuners.mor import MoRLayer

    resolved = out_dir / RESOLVED_CONFIG_FILE
    if not resolved.is_file():
        raise UserError(f"{out_dir} has no {RESOLVED_CONFIG_FILE}; pass a training output_dir of plugin.train")
    cfg = yaml.safe_load(resolved.read_text())
    model, tokenizer, _ = load_model_with_adapter(cfg["base_model"], str(out_dir), cfg.get("load_in_4bit", False))
    layers = dict(adapter_layers(model, MoRLayer))
    if not layers:
        return None, None
    names = list(layers)
    if layer is None:
        chosen = names[len(names) // 2]
    elif layer.isdigit() and int(layer) < len(names):
        chosen = names[int(layer)]
    else:
        matches = [n for n in names if n.endswith(layer)]
        if not matches:
            raise UserError(f"--layer {layer!r} is no MoR layer; e.g. {names[0].removeprefix('base_model.model.')}")
        chosen = matches[0]
    target = layers[chosen]
    captured = []

    def keep_gates(module, inputs, output):
        router = module.mor_router[module.active_adapters[0]]
        x = inputs[0].to(router.weight.dtype)
        captured.append(torch.softmax(router(x).float(), -1).reshape(-1, router.out_features))

    hook = target.register_forward_hook(keep_gates)
    with torch.no_grad():
        for text in texts:
            model(**tokenizer(text, return_tensors="pt"))
    hook.remove()
    return chosen.removeprefix("base_model.model."), torch.cat(captured).numpy()


def _uniform_entropy(rows: list[dict]) -> tuple[float, str] | None:
    means = next((r["router_mean"] for r in rows if r.get("router_mean")), None)
    if not means:
        return None
    n = len(next(iter(means.values())))
    return math.log(n), f"uniform router: ln {n}"


def plot_router_weights(name: str, gates, path: Path) -> Path:
    import matplotlib.pyplot as plt

    n = gates.shape[1]
    fig, ax = plt.subplots(figsize=(max(6, n * 0.8), 4.5))
    ax.boxplot([gates[:, i] for i in range(n)], showfliers=False, showmeans=True)
    ax.axhline(1 / n, color="gray", ls="--", lw=1, label=f"uniform 1/{n}")
    ax.set_xticks(range(1, n + 1), [f"E{i + 1}" for i in range(n)])
    ax.set(title=f"Router weights per expert, {name}\n({gates.shape[0]} tokens)", xlabel="expert",
           ylabel="router weight")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_texts(path: Path, limit: int) -> list[str]:
    if not path.is_file():
        raise UserError(f"--texts file not found: {path}")
    texts = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            texts.append(row.get("question") or row.get("text") or json.dumps(row))
        except json.JSONDecodeError:
            texts.append(line)  # plain text, one per line
        if len(texts) >= limit:
            break
    if not texts:
        raise UserError(f"--texts {path} holds no text")
    return texts


def write_plots(out_dir: Path, output: Path | None = None, layer: str | None = None, texts: Path = DEFAULT_TEXTS,
                num_texts: int = 32) -> list[Path]:
    """Every picture the run's telemetry allows, in ``output`` (default OUT_DIR/plots); returns their paths."""
    if not out_dir.is_dir():
        raise UserError(f"output folder not found: {out_dir}")
    dest = output or out_dir / "plots"
    check_writable_folder(dest, "--output")
    dest.mkdir(parents=True, exist_ok=True)
    rows = read_telemetry(out_dir)
    written = [
        plot_curves(rows, "orth_loss", "MPLoRA orthogonality loss", "sum_{i<j} ||B_i^T B_j||_F^2",
                    dest / "orthogonality.png", total=True),
        plot_curves(rows, "router_entropy", "MoR router entropy", "mean per-token entropy (nats)",
                    dest / "router_entropy.png", total=False, reference=_uniform_entropy(rows)),
        plot_rewards(out_dir, dest / "rewards.png"),
    ]
    if any(rows and r.get("router_mean") for r in rows):
        name, gates = router_gates_on_texts(out_dir, layer, load_texts(texts, num_texts))
        written.append(plot_router_weights(name, gates, dest / "router_weights.png"))
    written = [w for w in written if w]
    if not written:
        raise UserError(f"{out_dir} has no telemetry.jsonl with MoR or MPLoRA values and no logged rewards; train "
                        "with plugin.train first")
    return written
