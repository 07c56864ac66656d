from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..base import LowRankConfig


@dataclass
class LoRATRFConfig(LowRankConfig):
    """LoRA with a task-relevant feature filter.

    ``trf_mode="output"`` (eq. 4-5 read literally): h = W x + s B A x, g = clamp(cos(h, t), 0, 1),
    y = h + T_B T_A (g h) with a rank-``trf_rank`` transform. ``trf_mode="input"``: the filter gates the
    adapter's input, y = W x + s B A (g x) with g = clamp(cos(x, t), 0, 1); no transform parameters.
    """

    trf_rank: Optional[int] = field(default=None, metadata={"help": "Rank k of the transform T; None means r."})
    trf_mode: Literal["output", "input"] = field(default="output", metadata={
        "help": "'output': gate the layer's output and add a rank-k transform (eq. 4-5); 'input': gate the adapter's "
                "input (no transform)."})
    trf_task_vector_init: Literal["random", "input_mean"] = field(
        default="random",
        metadata={"help": "'random': t ~ normal(0, 1), the paper's reading (the gate then starts near 0.4/sqrt(d)). "
                          "'input_mean': before training, t is set to the mean of what the gate reads over the first "
                          "batch (plugin.train does it; in your own loop call plugin.init_task_vectors)."},
    )

    _peft_type_name = "LORATRF"
    _display_name = "LoRATRF"
    _paper = '"LoRA with Task-Relevant Feature Enhancement"'
    _field_prefix = "trf_"

    def __post_init__(self):
        super().__post_init__()
        if self.trf_rank is None:
            self.trf_rank = self.r
        self._check_positive_int("trf_rank", self.trf_rank)
        if self.trf_mode not in ("output", "input"):
            raise ValueError(f"trf_mode must be 'output' or 'input', got {self.trf_mode!r}")
        if self.trf_task_vector_init not in ("random", "input_mean"):
            raise ValueError(f"trf_task_vector_init must be 'random' or 'input_mean', got {self.trf_task_vector_init!r}")
