from __future__ import annotations

from dataclasses import dataclass, field

from ..base import LowRankConfig


@dataclass
class MoRConfig(LowRankConfig):
    """Mixture of Ranks: one shared LoRA pair, per-expert scaling vectors Omega_A (N x r) and Omega_B (N x d_out),
    and a softmax router over N experts.

    Paper defaults: r=8, lora_alpha=32, dropout 0.05, gate/up/down projections, num_experts=8.
    """

    lora_alpha: float = field(default=32, metadata={"help": "Scaling numerator: s = lora_alpha / r."})
    num_experts: int = field(default=8, metadata={"help": "Number of experts N (rank transformations)."})
    router_aux_loss_coef: float = field(
        default=0.0, metadata={"help": "Weight of the Switch-style router balance loss (paper: 0, plain router)."}
    )
    router_init_std: float = field(default=0.02, metadata={"help": "Std of the router's normal init."})

    _peft_type_name = "MOR"
    _display_name = "MoR"
    _paper = '"Mixture of Ranks": a shared LoRA pair, per-expert scaling vectors and a router'

    def __post_init__(self):
        super().__post_init__()
        self._check_positive_int("num_experts", self.num_experts)
        if self.router_aux_loss_coef < 0:
            raise ValueError(f"router_aux_loss_coef must be >= 0, got {self.router_aux_loss_coef!r}")
        if self.router_init_std <= 0:
            raise ValueError(f"router_init_std must be > 0, got {self.router_init_std!r}")

    def aux_loss_weights(self, step: int) -> dict[str, float]:
        return {"router_balance_loss": self.router_aux_loss_coef}
