from __future__ import annotations

from dataclasses import dataclass, field

from ..base import LowRankConfig


@dataclass
class MPLoraConfig(LowRankConfig):
    """MPLoRA: LoRA whose B is cut into ``num_paths`` row blocks kept mutually orthogonal by an auxiliary loss.

    The forward pass is LoRA's; the trainer adds ``orth_weight * sum_{i<j} ||B_i^T B_j||_F^2`` from step
    ``orth_start_step`` on. Paper defaults: r=8, lora_alpha=16, query/value, num_paths 2-8, orth_weight 0.1.
    """

    num_paths: int = field(default=4, metadata={"help": "Number of paths n (row blocks of B), 1 <= n <= d_out."})
    orth_weight: float = field(default=0.1, metadata={"help": "Weight lambda of the orthogonality loss."})
    orth_start_step: int = field(default=0, metadata={"help": "Optimiser step from which the loss is added."})

    _peft_type_name = "MPLORA"
    _display_name = "MPLoRA"
    _weight_delta = True
    _paper = '"Orthogonal Multi-Path Low-Rank Adaptation", NeurIPS 2024 workshop'

    def __post_init__(self):
        super().__post_init__()
        self._check_positive_int("num_paths", self.num_paths)
        if self.orth_weight < 0:
            raise ValueError(f"orth_weight must be >= 0, got {self.orth_weight!r}")
        if not isinstance(self.orth_start_step, int) or self.orth_start_step < 0:
            raise ValueError(f"orth_start_step must be a non-negative integer, got {self.orth_start_step!r}")

    def aux_loss_weights(self, step: int) -> dict[str, float]:
        return {"orth_loss": self.orth_weight if step >= self.orth_start_step else 0.0}
