from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..base import LowRankConfig, LowRankLayer, add_product_, principal_init


GATE_EPS = 1e-8


def relevance_gate(h: torch.Tensor, task_vector: torch.Tensor, eps: float = GATE_EPS) -> torch.Tensor:
    """g = clamp(cos(h, t), 0, 1) per token, shaped to broadcast over h's last dim.

    Written as (h . t) / (|h| |t|) with two reductions, so no tokens x d temporary is kept for backward.
    """
    norms = torch.linalg.vector_norm(h, dim=-1) * torch.linalg.vector_norm(task_vector)
    cos = (h @ task_vector) / norms.clamp_min(eps)
    return cos.clamp(0.0, 1.0).unsqueeze(-1)


def gate_from_projection(h_dot_unit_t: torch.Tensor, h: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """The same gate from h . (t / |t|), already computed as one column of a matmul:
    (h . t) / max(|h| |t|, eps) = (h . t/|t|) / max(|h|, eps / |t|), with ``floor`` = eps / |t|."""
    return (h_dot_unit_t / torch.linalg.vector_norm(h, dim=-1, keepdim=True).clamp_min(floor)).clamp(0.0, 1.0)


def stack_unit_vector(weight: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([weight; t / |t|], eps / |t|): the gate's dot product becomes one more output row of ``weight``'s matmul."""
    norm = t.norm()
    return torch.cat([weight, (t / norm).to(weight.dtype)[None]]), GATE_EPS / norm


class TaskVector(nn.Module):
    """The task vector t (normal(0, 1)); its call returns the relevance gate of h, so t is used inside it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return relevance_gate(h, self.weight)


@torch.no_grad()
def init_task_vectors(model: nn.Module, batch: dict) -> int:
    """Set each LoRATRF task vector t to the mean, over one batch's tokens, of what its gate reads (the layer's input
    in input mode, its output h in output mode), so the gate starts near 1 for typical tokens instead of about
    0.4/sqrt(d) for a random t. At initialisation B and T_B are zero, so t changes no layer's output and one forward
    pass sees every gate's real input. Returns how many vectors were set."""
    means: dict[TaskVector, torch.Tensor] = {}

    def capture(module, args):
        h = args[0]
        means.setdefault(module, h.reshape(-1, h.shape[-1]).float().mean(0))

    hooks = [m.register_forward_pre_hook(capture) for m in model.modules() if isinstance(m, TaskVector)]
    was_training = model.training
    try:
        model.eval()  # no dropout anywhere; the adapter layers alone in train mode take the path that calls t's module
        for layer in model.modules():
            if isinstance(layer, LoRATRFLayer):
                layer.train()
        model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for module, mean in means.items():
        module.weight.copy_(mean.to(module.weight.dtype))
    return len(means)


class LoRATRFLayer(LowRankLayer):
    prefix = "trf_"
    adapter_layer_names = ("trf_A", "trf_B", "trf_t", "trf_T_A", "trf_T_B")
    legacy_parameter_dicts = ("trf_t",)
    other_param_names = LowRankLayer.other_param_names + ("trf_mode",)
    not_mergeable_reason = (
        "LoRATRF cannot be merged: its task-relevance filter scales each token by cos(h, t), which no fixed "
        "weight matrix reproduces; use unload() to get the base model back, or keep the adapter unmerged"
    )

    def check_config(self, config: LowRankConfig) -> None:
        if principal_init(config.init_weights) and config.trf_mode == "input":
            raise ValueError(f"init_weights={config.init_weights!r} needs the adapter to add s B A x at init, but "
                             "trf_mode 'input' gates it by cos(x, t); use trf_mode 'output' or init_weights True")

    def create_method_params(self, adapter_name: str, config: LowRankConfig) -> None:
        self.trf_mode[adapter_name] = config.trf_mode
        if config.trf_mode == "input":
            self.trf_t[adapter_name] = TaskVector(self.in_features)
            return
        d, k = self.out_features, config.trf_rank
        self.trf_t[adapter_name] = TaskVector(d)
        self.trf_T_A[adapter_name] = nn.Linear(d, k, bias=False)
        self.trf_T_B[adapter_name] = nn.Linear(k, d, bias=False)

    @torch.no_grad()
    def reset_parameters(self, adapter_name: str, init_weights: bool) -> None:
        super().reset_parameters(adapter_name, init_weights)
        nn.init.normal_(self.trf_t[adapter_name].weight)
        if adapter_name in self.trf_T_A:
            nn.init.kaiming_uniform_(self.trf_T_A[adapter_name].weight, a=math.sqrt(5))
            t_b = self.trf_T_B[adapter_name].weight
            nn.init.zeros_(t_b) if init_weights else nn.init.normal_(t_b, std=0.02)

    def _adapter_output(self, adapter_name, x, result):
        if self.inference_path(adapter_name):
            return self._inference_output(adapter_name, x, result)
        scaling = self.scaling[adapter_name]
        a, b, gate = self.trf_A[adapter_name], self.trf_B[adapter_name], self.trf_t[adapter_name]
        if self.trf_mode[adapter_name] == "input":
            # the gate reads the un-dropped input: g = clamp(cos(x, t), 0, 1); g is per token, so
            # B A (g x) = g B A x and the gate is applied on the rank-r side
            x_a = x.to(a.weight.dtype)
            z = a(self.lora_dropout[adapter_name](x_a))
            return result + b(gate(x_a) * scaling * z).to(result.dtype)
        h = result.to(a.weight.dtype) + b(self.low_rank(adapter_name, x) * scaling)
        # T_A (g h) = g T_A h for a per-token g: gate the rank-k activations, not a tokens x d_out copy of h
        gated = gate(h) * self.trf_T_A[adapter_name](h)
        return (h + self.trf_T_B[adapter_name](gated)).to(result.dtype)

    def _inference_output(self, adapter_name, x, result):
        """The same output with fewer operations per token, from weights built once per update: t / |t| is stacked
        under the matrix the gate's input meets anyway (A in input mode, T_A in output mode), so the gate costs one
        more output column and a norm; B is pre-scaled; no module calls."""
        scaling = self.scaling[adapter_name]
        if self.trf_mode[adapter_name] == "input":
            (a_t, floor), b_scaled = self.inference_weight(
                adapter_name, "[A; t/|t|], s B", self.adapter_weights(adapter_name, "trf_A", "trf_t", "trf_B"),
                lambda a, t, b: (stack_unit_vector(a, t), b * scaling))
            x_a = x.to(a_t.dtype)
            u = F.linear(x_a, a_t)
            gate = gate_from_projection(u[..., -1:], x_a, floor)
            return add_product_(result, u[..., :-1] * gate, b_scaled.T)
        a, t, b, t_a, t_b = self.adapter_weights(adapter_name, "trf_A", "trf_t", "trf_B", "trf_T_A", "trf_T_B")
        b_scaled, (t_a_t, floor) = self.inference_weight(
            adapter_name, "s B, [T_A; t/|t|]", (a, t, b, t_a),
            lambda a, t, b, t_a: (b * scaling, stack_unit_vector(t_a, t)),
        )
        h = add_product_(result.to(a.dtype), F.linear(x.to(a.dtype), a), b_scaled.T)  # result itself if dtypes agree
        u = F.linear(h, t_a_t)
        gated = u[..., :-1] * gate_from_projection(u[..., -1:], h, floor)
        return add_product_(h, gated, t_b.T).to(result.dtype)
