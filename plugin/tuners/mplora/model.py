from __future__ import annotations

from ..base import LowRankModel
from .layer import MPLoraLayer


class MPLoraModel(LowRankModel):
    """Orthogonal multi-path LoRA (MPLoRA) tuner; mergeable like LoRA."""

    prefix = "mplora_"
    tuner_layer_cls = MPLoraLayer
    # paper: query and value projections
    target_module_mapping = {
        "llama": ["q_proj", "v_proj"],
        "mistral": ["q_proj", "v_proj"],
        "qwen2": ["q_proj", "v_proj"],
        "roberta": ["query", "value"],
        "bert": ["query", "value"],
        "gpt2": ["c_attn"],
    }
