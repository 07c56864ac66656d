from __future__ import annotations

from ..base import LowRankModel
from .layer import MoRLayer

# paper: the FFN projections of LLaMA-style models
_FFN = ["gate_proj", "up_proj", "down_proj"]


class MoRModel(LowRankModel):
    """Mixture of Ranks tuner. Not mergeable (the router is input dependent); unload() works."""

    prefix = "mor_"
    tuner_layer_cls = MoRLayer
    target_module_mapping = {"llama": _FFN, "mistral": _FFN, "qwen2": _FFN, "gemma": _FFN, "gpt2": ["c_fc", "c_proj"]}
