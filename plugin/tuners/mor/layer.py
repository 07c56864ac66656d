from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import LowRankConfig, LowRankLayer, Scale, add_product_, transposed_weight


def expert_matrix(b_t: torch.Tensor, scale_b) -> torch.Tensor:
    """The N experts' up-projections as one (r*N) x d_out matrix: row j*N + i is Omega_B[i] (.) B[:, j].

    ``b_t`` is B^T (r x d_out); ``scale_b`` multiplies by Omega_B (N x d_out) by broadcasting (the Omega_B module,
    or its weight where it is held in full).
    """
    return scale_b(b_t.unsqueeze(1)).flatten(0, 1)


def switch_balance_loss(probs: torch.Tensor) -> torch.Tensor:
    """N * sum_i f_i * P_i (Switch Transformer): f_i share of tokens routed (argmax) to i, P_i mean probability."""
    num_experts = probs.shape[-1]
    probs = probs.reshape(-1, num_experts)
    frac = torch.bincount(probs.argmax(-1), minlength=num_experts).to(probs.dtype) / probs.shape[0]
    return num_experts * (frac * probs.mean(0)).sum()


class MoRLayer(LowRankLayer):
    prefix = "mor_"
    adapter_layer_names = ("mor_A", "mor_B", "mor_omega_A", "mor_omega_B", "mor_router")
    legacy_parameter_dicts = ("mor_omega_A", "mor_omega_B")
    # last_gates holds the last forward's router probabilities, per adapter
    other_param_names = LowRankLayer.other_param_names + ("num_experts", "router_init_std", "balance_coef", "last_gates")
    not_mergeable_reason = (
        "MoR cannot be merged: its router makes the update depend on each token's input; "
        "use unload() to get the base model back, or keep the adapter unmerged"
    )

    def create_method_params(self, adapter_name: str, config: LowRankConfig) -> None:
        n = config.num_experts
        self.num_experts[adapter_name] = n
        self.balance_coef[adapter_name] = config.router_aux_loss_coef
        self.mor_omega_A[adapter_name] = Scale(n, config.r)
        self.mor_omega_B[adapter_name] = Scale(n, self.out_features)
        self.mor_router[adapter_name] = nn.Linear(self.in_features, n, bias=False)
        self.router_init_std[adapter_name] = config.router_init_std

    @torch.no_grad()
    def reset_parameters(self, adapter_name: str, init_weights: bool) -> None:
        super().reset_parameters(adapter_name, init_weights)
        nn.init.normal_(self.mor_router[adapter_name].weight, std=self.router_init_std[adapter_name])
        if not init_weights:  # experts differ from the start so tests see each one act
            self.mor_omega_A[adapter_name].weight.normal_(1.0, 0.5)
            self.mor_omega_B[adapter_name].weight.normal_(1.0, 0.5)
            nn.init.normal_(self.mor_router[adapter_name].weight, std=0.5)

    def _adapter_output(self, adapter_name, x, result):
        """y = W x + s * sum_i G_i Omega_B[i] (.) B (Omega_A[i] (.) z), without a tokens x N x d_out intermediate:
        w[t, j, i] = G_i z_j Omega_A[i, j] (tokens x r*N) times the experts' (r*N) x d_out matrix."""
        if self.inference_path(adapter_name):
            return self._inference_output(adapter_name, x, result)
        router = self.mor_router[adapter_name]
        gates = torch.softmax(router(x.to(router.weight.dtype)).float(), dim=-1)
        self.last_gates[adapter_name] = gates.detach()  # telemetry reads it when it logs, not every forward
        if self.training and self.balance_coef[adapter_name] > 0:
            self.record_aux_loss(adapter_name, "router_balance_loss", switch_balance_loss(gates))
        z = self.low_rank(adapter_name, x) * self.scaling[adapter_name]  # scale on the rank-r side
        w = self.mor_omega_A[adapter_name](z.unsqueeze(-2)) * gates.to(z.dtype).unsqueeze(-1)  # tokens x N x r
        experts = expert_matrix(transposed_weight(self.mor_B[adapter_name], z), self.mor_omega_B[adapter_name])
        return result + (w.transpose(-1, -2).flatten(-2) @ experts).to(result.dtype)

    def _inference_output(self, adapter_name, x, result):
        """The same output with two matmuls per token, from weights built once per update: [A; router] x gives z
        and the router logits together, and C (rows j*N + i = s * Omega_A[i, j] * Omega_B[i] (.) B[:, j]) takes
        Omega_A and the scaling out of the per-token work, leaving delta = (z (x) gates) C."""
        sources = self.adapter_weights(adapter_name, "mor_A", "mor_router", "mor_omega_A", "mor_omega_B", "mor_B")
        scaling = self.scaling[adapter_name]

        def build(a, router, omega_a, omega_b, b):
            c = expert_matrix(b.T, lambda b_t: b_t * omega_b) * (omega_a.T.reshape(-1, 1) * scaling).to(b.dtype)
            return torch.cat([a, router.to(a.dtype)]), c

        stacked, c = self.inference_weight(adapter_name, "[A; router], C", sources, build)
        dtype, rank = stacked.dtype, self.r[adapter_name]
        both = F.linear(x.to(dtype), stacked)
        gates = torch.softmax(both[..., rank:], dim=-1, dtype=torch.float32)
        self.last_gates[adapter_name] = gates
        w = (both[..., :rank].unsqueeze(-1) * gates.to(dtype).unsqueeze(-2)).flatten(-2)
        return add_product_(result, w, c)

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
