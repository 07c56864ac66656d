from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..base import LowRankConfig, LowRankLayer, principal_init, transposed_weight


def orthogonality_loss(b: torch.Tensor, num_paths: int) -> torch.Tensor:
    """sum_{i<j} ||B_i^T B_j||_F^2 over the row blocks B_i = torch.tensor_split(b, num_paths, dim=-2), summed over
    any leading (expert) dimensions.

    Blocks differ by at most one row (the first d_out mod n are longer); zero-padding the short ones makes the
    extra row drop out of exactly the pairs where the spec says to ignore it.
    """
    blocks = torch.tensor_split(b, num_paths, dim=-2)
    longest = blocks[0].shape[-2]
    paths = torch.stack([F.pad(blk, (0, 0, 0, longest - blk.shape[-2])) for blk in blocks])  # n x ... x rows x r
    gram = torch.einsum("i...dr,j...ds->ij...rs", paths, paths)  # gram[i, j] = B_i^T B_j
    pair_sq = gram.pow(2).flatten(2).sum(-1)
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


class _PlusDelta(nn.Module):
    """W -> W + delta, as a parametrization: the wrapped module reads the adapted weight while it runs."""

    def __init__(self, delta: torch.Tensor) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta.to(weight.dtype)


class ParamWrapper(LowRankLayer):
    """MPLoRA on a raw parameter (``target_parameters``), e.g. a MoE block's 3D expert tensor, as PEFT's
    ``lora.ParamWrapper``: expert e's weight becomes W_e + s B_e A_e while the wrapped module runs, B_e's row blocks
    are its paths, and the orthogonality loss sums over experts. A and B are laid out as PEFT's LoRA lays out its
    wrapper's (A: E·r x d_in, expert-major; B: d_out x r·E, expert-minor), so an MPLoRA adapter exports to LoRA by
    renaming. Named as PEFT's class: PEFT's injection finds an existing wrapper by that
    name to add a second adapter, and wraps one parameter per wrapper (a module's second parameter nests).

    A 3D parameter is (experts, d_out, d_in) as transformers 5 stores experts, or (experts, d_in, d_out) where the
    module sets ``is_transposed``; a 2D one is (d_out, d_in)."""

    prefix = MPLoraLayer.prefix
    adapter_layer_names = MPLoraLayer.adapter_layer_names
    other_param_names = MPLoraLayer.other_param_names
    mergeable = True

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: LowRankConfig, *, parameter_name: str):
        self.parameter_name = parameter_name
        super().__init__(base_layer, adapter_name, config)

    def adapted_weight(self) -> nn.Parameter:
        return getattr(self.get_base_layer(), self.parameter_name)

    @property
    def transposed(self) -> bool:
        """Experts stored (experts, d_in, d_out), as the module says; transformers 5's default is (.., d_out, d_in)."""
        return getattr(self.get_base_layer(), "is_transposed", False)

    def adapted_shape(self) -> tuple[int, int]:
        weight = self.adapted_weight()
        shape = tuple(getattr(weight, "ds_shape", weight.shape))  # DeepSpeed ZeRO-3 keeps the real shape there
        if len(shape) not in (2, 3):
            raise ValueError(f"target_parameters: {self.parameter_name} has {len(shape)} dimensions; only 2D and 3D "
                             "(experts) parameters can be adapted")
        self.stacked = shape[0] if len(shape) == 3 else 1
        d_out, d_in = shape[-2:]
        return (d_out, d_in) if self.transposed else (d_in, d_out)

    def check_config(self, config: LowRankConfig) -> None:
        MPLoraLayer.check_config(self, config)
        if config.lora_dropout:  # dropout acts on the input, which a weight delta never sees (PEFT's LoRA alike)
            raise ValueError("target_parameters needs lora_dropout: 0: the update is added to the weight, so the "
                             "input cannot be dropped out for the adapter alone")
        if principal_init(config.init_weights):
            raise ValueError(f"init_weights={config.init_weights!r} is not available with target_parameters; use "
                             "init_weights=True")

    create_method_params = MPLoraLayer.create_method_params

    def _factors(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(B_e: experts x d_out x r, A_e: experts x r x d_in)."""
        r = self.r[adapter_name]
        a = self.lora_A_dict[adapter_name].weight.view(self.stacked, r, self.in_features)
        b = self.lora_B_dict[adapter_name].weight.view(self.out_features, r, self.stacked).permute(2, 0, 1)
        return b, a

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        b, a = self._factors(adapter_name)
        delta = torch.bmm(b, a) * self.scaling[adapter_name]  # experts x d_out x d_in
        if self.transposed:
            delta = delta.transpose(1, 2)
        weight = self.adapted_weight()
        return delta.reshape(weight.shape).to(weight.dtype)

    def unload_and_optionally_merge_module(self, merge: bool, safe_merge: bool, adapter_names) -> nn.Module:
        """The wrapped module (through any nested wrappers of its other parameters), merged first if asked."""
        layer = self
        while isinstance(layer, ParamWrapper):
            if merge:
                layer.merge(safe_merge=safe_merge, adapter_names=adapter_names)
            layer = layer.base_layer
        return layer

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if kwargs.pop("adapter_names", None) is not None:
            raise ValueError("mixed-adapter batches (adapter_names) are not supported on target_parameters, as for "
                             "PEFT's LoRA: serve experts' adapters one adapter per batch")
        active = [name for name in self.active_adapters if name in self.lora_A_dict]
        if self.disable_adapters and self.merged:
            self.unmerge()
        if self.disable_adapters or self.merged or not active:
            return self.base_layer(x, *args, **kwargs)
        delta = None
        for name in active:
            if self.training and self.num_paths[name] > 1:
                b, _ = self._factors(name)
                self.record_aux_loss(name, "orth_loss", orthogonality_loss(b, self.num_paths[name]))
            delta = self.get_delta_weight(name) if delta is None else delta + self.get_delta_weight(name)
        module = self.get_base_layer()
        parametrize.register_parametrization(module, self.parameter_name, _PlusDelta(delta), unsafe=True)
        try:
            return self.base_layer(x, *args, **kwargs)
        finally:
            parametrize.remove_parametrizations(module, self.parameter_name, leave_parametrized=False)
