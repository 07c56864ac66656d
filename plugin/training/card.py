"""What ``plugin.train`` adds to the adapter's model card: how it was trained and how it scored (the method section
comes from the adapter's config, ``plugin.tuners.card``)."""

from __future__ import annotations

from pathlib import Path

from ..evaluation.harness import markdown_table
from ..tuners.card import add_section

# the settings a reader of the card needs to reproduce or judge the run; the full list is resolved_config.yaml
SHOWN = ("base_model", "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "load_in_4bit",
         "sequence_len", "micro_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler",
         "num_epochs", "max_steps", "seed")
# a preference stage's loss settings (rl: names the loss: DPO's sigmoid, IPO, KTO, ORPO, SimPO, GRPO)
STAGE_SHOWN = {"dpo": ("rl_beta", "rpo_alpha", "dpo_label_smoothing"), "ipo": ("rl_beta", "rpo_alpha"),
               "kto": ("rl_beta", "kto_desirable_weight", "kto_undesirable_weight"), "orpo": ("orpo_alpha",),
               "simpo": ("rl_beta", "simpo_gamma", "cpo_alpha"), "grpo": ("rl_beta", "trl")}


def add_training_section(folder: Path, config: dict, log_history: list[dict], held_out: dict | None) -> None:
    method = {key: value for key, value in config.items() if key.startswith(f"{config['adapter']}_")}
    stage = [("rl", config["rl"]), *((key, config.get(key)) for key in STAGE_SHOWN.get(config["rl"], ()))] if \
        config.get("rl") else []
    rows = [(key, config.get(key)) for key in SHOWN] + stage + sorted(method.items())
    data = ", ".join(f"`{d['path']}` ({d['type']})" for d in config.get("datasets") or [])
    lines = ["## Training", "", f"Trained with `python -m plugin.train` on {data or 'the datasets in resolved_config.yaml'}; "
             "every setting is in `resolved_config.yaml` beside the adapter.", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in rows if value is not None]
    losses = [entry for entry in log_history if "loss" in entry]
    evals = [entry for entry in log_history if "eval_loss" in entry]
    results = []
    if losses:
        results.append(f"final training loss {losses[-1]['loss']:.4f} at step {losses[-1].get('step')}")
    if evals:
        results.append(f"held-out loss {evals[-1]['eval_loss']:.4f} at step {evals[-1].get('step')}")
    if held_out:
        results += [f"{key.removeprefix('eval_')} {value:.4f}" for key, value in held_out.items()
                    if isinstance(value, float) and "runtime" not in key and "per_second" not in key]
    if results:
        lines += ["", "Results: " + "; ".join(results) + "."]
    add_section(folder, "training", "\n".join(lines))


def add_eval_section(folder: Path, report: dict) -> None:
    """The lm-eval scores of the ``eval:`` section run after training."""
    text = f"## Evaluation (lm-eval {report.get('lm_eval_version', '')}, limit {report.get('limit')})\n\n"
    add_section(folder, "evaluation", text + markdown_table(report["rows"]))
