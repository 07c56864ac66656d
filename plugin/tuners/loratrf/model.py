from __future__ import annotations

from ..base import LowRankModel
from .layer import LoRATRFLayer


class LoRATRFModel(LowRankModel):
    """LoRA with task-relevant feature filter. Not mergeable (the filter is input dependent); unload() works."""

    prefix = "trf_"
    tuner_layer_cls = LoRATRFLayer
    # paper: W_o, W_f1, W_f2 on LLaMA; value + both FFN matrices on DeBERTaV3
    target_module_mapping = {
        "llama": ["o_proj", "up_proj", "down_proj"],
        "mistral": ["o_proj", "up_proj", "down_proj"],
        "qwen2": ["o_proj", "up_proj", "down_proj"],
        "deberta-v2": r".*\.(value_proj|intermediate\.dense|layer\.\d+\.output\.dense)$",
    }
