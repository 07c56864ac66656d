from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import LowRankConfig, LowRankLayer, transposed_weight


def orthogonality_loss(b: torch.Tensor, num_paths: int) -> torch.Tensor:
    """sum_{i<j} ||B_i^T B_j||_F^2 over the row blocks B_i = torch.tensor_split(b, num_paths, dim=0).

    Blocks differ by at most one row (the first d_out mod n are longer); zero-padding the short ones makes the
    extra row drop out of exactly the pairs where the spec says to ignore it.
    """
    blocks = torch.tensor_split(b, num_paths, dim=0)
    longest = blocks[0].shape[0]
    paths = torch.stack([F.pad(blk, (0, 0, 0, longest - blk.shape[0])) for blk in blocks])  # n x rows x r
    gram = torch.einsum("idr,jds->ijrs", paths, paths)  # gram[i, j] = B_i^T B_j
    pair_sq = gram.pow(2).sum(dim=(-1, -2))
    return pair_sq.triu(diagonal=1).sum()


class MPLoraLayer(LowRankLayer):
    prefix = "mplora_"
    adapter_layer_names = ("mplora_A", "mplora_B")
    other_param_names = LowRankLayer.other_param_names + ("num_paths",)
    mergeable = True

    def check_config(self, config: LowRankConfig) -> None:
        if not 1 <= config.num_paths <= self.out_features:
            raise ValueError(
                f"num_paths={config.num_paths} must be between 1 and the layer's output size d_out="
                f"{self.out_features}; lower num_paths (mplora_num_paths in YAML)"
            )

    def create_method_params(self, adapter_name: str, config: LowRankConfig) -> None:
        self.num_paths[adapter_name] = config.num_paths

    def _adapter_output(self, adapter_name, x, result):
        # Concatenating the paths' outputs is exactly B A x: the forward is LoRA's
        # scale on the rank-r side: one tokens x r multiply instead of tokens x d_out
        z = self.low_rank(adapter_name, x) * self.scaling[adapter_name]
        b = self.mplora_B[adapter_name]
        if self.training and self.num_paths[adapter_name] > 1:
            b_t = transposed_weight(b, z)  # r x d_out
            self.record_aux_loss(adapter_name, "orth_loss", orthogonality_loss(b_t.T, self.num_paths[adapter_name]))
        return result + b(z).to(result.dtype)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        base_weight = self.get_base_layer().weight
        delta = self.mplora_B[adapter_name].weight @ self.mplora_A[adapter_name].weight * self.scaling[adapter_name]
        delta = delta.to(base_weight.dtype)
        return delta.T if self.fan_in_fan_out else delta
