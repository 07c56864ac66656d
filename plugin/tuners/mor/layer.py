from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import LowRankConfig, LowRankLayer


def fold_experts(omega_b: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """B~ = Omega_B^T (x) B, d_out x N*r: column i*r + j is Omega_B[i] (.) B[:, j]."""
    return (omega_b.T.unsqueeze(-1) * b.unsqueeze(1)).reshape(b.shape[0], -1)


def mixture_of_ranks(
    z: torch.Tensor, gates: torch.Tensor, omega_a: torch.Tensor, omega_b: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """sum_i gates_i * Omega_B[i] (.) B (Omega_A[i] (.) z), without a tokens x N x d_out intermediate.

    The experts are folded into one matmul of width N*r: w = (gates (x) Omega_A) (.) z is tokens x N*r and
    B~ = Omega_B^T (x) B is d_out x N*r, so the result is w @ B~^T. The largest activation is tokens x N*r.
    """
    w = (gates.unsqueeze(-1) * omega_a) * z.unsqueeze(-2)  # ... x N x r
    return w.flatten(-2) @ fold_experts(omega_b, b).T


def switch_balance_loss(probs: torch.Tensor) -> torch.Tensor:
    """N * sum_i f_i * P_i (Switch Transformer): f_i share of tokens routed (argmax) to i, P_i mean probability."""
    num_experts = probs.shape[-1]
    probs = probs.reshape(-1, num_experts)
    frac = torch.bincount(probs.argmax(-1), minlength=num_experts).to(probs.dtype) / probs.shape[0]
    return num_experts * (frac * probs.mean(0)).sum()


class MoRLayer(LowRankLayer):
    prefix = "mor_"
    adapter_layer_names = ("mor_A", "mor_B", "mor_omega_A", "mor_omega_B", "mor_router")
    parameter_dict_names = ("mor_omega_A", "mor_omega_B")
    # last_gates / balance_loss hold the last forward's values, per adapter
    other_param_names = LowRankLayer.other_param_names + (
        "num_experts",
        "router_init_std",
        "balance_coef",
        "last_gates",
        "balance_loss",
    )
    not_mergeable_reason = (
        "MoR cannot be merged: its router makes the update depend on each token's input; "
        "use unload() to get the base model back, or keep the adapter unmerged"
    )

    def create_method_params(self, adapter_name: str, config: LowRankConfig) -> None:
        n = config.num_experts
        self.num_experts[adapter_name] = n
        self.balance_coef[adapter_name] = config.router_aux_loss_coef
        self.mor_omega_A[adapter_name] = nn.Parameter(torch.ones(n, config.r))
        self.mor_omega_B[adapter_name] = nn.Parameter(torch.ones(n, self.out_features))
        self.mor_router[adapter_name] = nn.Linear(self.in_features, n, bias=False)
        self.router_init_std[adapter_name] = config.router_init_std

    @torch.no_grad()
    def reset_parameters(self, adapter_name: str, init_weights: bool) -> None:
        super().reset_parameters(adapter_name, init_weights)
        nn.init.normal_(self.mor_router[adapter_name].weight, std=self.router_init_std[adapter_name])
        if not init_weights:  # experts differ from the start so tests see each one act
            self.mor_omega_A[adapter_name].normal_(1.0, 0.5)
            self.mor_omega_B[adapter_name].normal_(1.0, 0.5)
            nn.init.normal_(self.mor_router[adapter_name].weight, std=0.5)

    def _adapter_output(self, adapter_name, x, result):
        if self.inference_path(adapter_name):
            return self._inference_output(adapter_name, x, result)
        router = self.mor_router[adapter_name]
        x_a = x.to(router.weight.dtype)
        gates = torch.softmax(router(x_a).float(), dim=-1)
        self.last_gates[adapter_name] = gates.detach()  # telemetry reads it when it logs, not every forward
        if self.training and self.balance_coef[adapter_name] > 0:
            self.balance_loss[adapter_name] = switch_balance_loss(gates)
        z = self.low_rank(adapter_name, x)
        delta = mixture_of_ranks(
            z * self.scaling[adapter_name],  # scale on the rank-r side
            gates.to(z.dtype),
            self.mor_omega_A[adapter_name],
            self.mor_omega_B[adapter_name],
            self.mor_B[adapter_name].weight,
        )
        return result + delta.to(result.dtype)

    def _inference_output(self, adapter_name, x, result):
        """The same output with two matmuls per token, from weights built once per update: [A; router] x gives z
        and the router logits together, and C = s * B~ * vec(Omega_A) (column-wise) takes Omega_A and the scaling
        out of the per-token work, leaving delta = (gates (x) z) C^T."""
        a, router = self.mor_A[adapter_name].weight, self.mor_router[adapter_name].weight
        omega_a, omega_b, b = self.mor_omega_A[adapter_name], self.mor_omega_B[adapter_name], self.mor_B[adapter_name].weight
        stacked = self.inference_weight(adapter_name, "[A; router]", (a, router), lambda a, r: torch.cat([a, r.to(a.dtype)]))
        scaling = self.scaling[adapter_name]
        c = self.inference_weight(adapter_name, "C", (omega_a, omega_b, b),
                                  lambda oa, ob, b: fold_experts(ob, b) * (oa.reshape(-1) * scaling).to(b.dtype))
        both = F.linear(x.to(a.dtype), stacked)
        rank = a.shape[0]
        gates = torch.softmax(both[..., rank:].float(), dim=-1)
        self.last_gates[adapter_name] = gates
        w = (gates.to(a.dtype).unsqueeze(-1) * both[..., :rank].unsqueeze(-2)).flatten(-2)
        return result + F.linear(w, c).to(result.dtype)

    def _token_gates(self, adapter_name: str) -> torch.Tensor:
        gates = self.last_gates[adapter_name]
        return gates.reshape(-1, gates.shape[-1])

    def router_mean(self, adapter_name: str) -> torch.Tensor:
        """Mean router probability per expert over the last forward's tokens."""
        return self._token_gates(adapter_name).mean(0)

    def router_entropy(self, adapter_name: str) -> float:
        """Mean per-token entropy of the router's distribution in the last forward."""
        flat = self._token_gates(adapter_name)
        return float(-(flat * flat.clamp_min(1e-12).log()).sum(-1).mean())

    def aux_losses(self, adapter_name: str) -> dict[str, torch.Tensor]:
        loss = self.balance_loss.pop(adapter_name, None)  # each forward's loss is added once
        return {} if loss is None else {"router_balance_loss": loss}
