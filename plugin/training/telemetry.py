"""Per-layer adapter telemetry at ``logging_steps``: MoR router statistics and MPLoRA orthogonality.

Per-layer values go to ``<output_dir>/telemetry.jsonl`` (one line per logging step; ``python -m plugin.plot``
draws them); a few summary scalars join the trainer's own logs.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from ..tuners.auxiliary import orthogonality_per_layer, router_entropies, router_weights


def _short(layer_name: str) -> str:
    return layer_name.removeprefix("base_model.model.")


def snapshot(model) -> dict:
    return {
        "router_mean": {_short(k): [round(float(x), 6) for x in v] for k, v in router_weights(model).items()},
        "router_entropy": {_short(k): round(v, 6) for k, v in router_entropies(model).items()},
        "orth_loss": {_short(k): v for k, v in orthogonality_per_layer(model).items()},
    }


class AdapterTelemetryCallback(TrainerCallback):
    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if model is None or not state.is_world_process_zero or logs is None or "loss" not in logs:
            return
        snap = snapshot(model)
        if not any(snap.values()):
            return
        if snap["router_entropy"]:
            values = list(snap["router_entropy"].values())
            summary = {
                "router_entropy_mean": sum(values) / len(values),
                "router_max_expert_share": max(max(v) for v in snap["router_mean"].values()),
            }
            logs.update(summary)  # printed by the progress callback
            if state.log_history:  # the Trainer recorded this log entry before calling back
                state.log_history[-1].update(summary)
        with open(Path(args.output_dir) / "telemetry.jsonl", "a") as f:
            f.write(json.dumps({"step": state.global_step, **snap}) + "\n")
