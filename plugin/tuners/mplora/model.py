from __future__ import annotations

import dataclasses

import torch

from ..base import LowRankModel
from .layer import MPLoraLayer, ParamWrapper


class MPLoraModel(LowRankModel):
    """Orthogonal multi-path LoRA (MPLoRA) tuner; mergeable like LoRA."""

    prefix = "mplora_"
    tuner_layer_cls = MPLoraLayer
    param_wrapper_cls = ParamWrapper
    # paper: query and value projections
    target_module_mapping = {
        "llama": ["q_proj", "v_proj"],
        "mistral": ["q_proj", "v_proj"],
        "qwen2": ["q_proj", "v_proj"],
        "roberta": ["query", "value"],
        "bert": ["query", "value"],
        "gpt2": ["c_attn"],
    }

    @torch.no_grad()
    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str,
                             combination_type: str = "cat", svd_rank: int | None = None) -> None:
        """A new adapter whose update is sum_i weights[i] * s_i B_i A_i, as PEFT's LoRA names it.

        "cat" stacks the pairs (rank = the sum of theirs): exact. "svd" keeps the top ``svd_rank`` singular
        directions of the summed update (default: the largest rank given): exact when ``svd_rank`` reaches the
        summed rank, the best approximation of that rank otherwise. LoRA's other types ("linear", "ties", "dare_*",
        "magnitude_prune") mix A and B separately, which is not the weighted sum of the updates."""
        if combination_type not in ("cat", "svd"):
            raise ValueError(f"combination_type {combination_type!r} is not supported for MPLoRA: 'cat' (exact) or "
                             "'svd' (exact at full rank)")
        missing = [name for name in adapters if name not in self.peft_config]
        if missing or len(weights) != len(adapters) or not adapters:
            raise ValueError(f"adapters {missing or adapters} and weights {weights}: name loaded adapters, one "
                             "weight each")
        if adapter_name in self.peft_config:
            raise ValueError(f"an adapter named {adapter_name!r} exists already")
        if any(self.peft_config[name].target_parameters for name in adapters):
            raise ValueError("add_weighted_adapter does not combine adapters on raw parameters (target_parameters); "
                             "merge them one after the other instead (merge_and_unload)")
        configs = [self.peft_config[name] for name in adapters]
        rank = sum(c.r for c in configs) if combination_type == "cat" else (svd_rank or max(c.r for c in configs))
        targets = set().union(*(set(c.target_modules) if not isinstance(c.target_modules, str) else
                                {c.target_modules} for c in configs))
        self.peft_config[adapter_name] = dataclasses.replace(  # scaling 1: the weights and each s_i are in B
            configs[0], r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={},
            target_modules=targets if len(targets) > 1 or not isinstance(configs[0].target_modules, str) else
            configs[0].target_modules, init_weights=True)
        self.inject_adapter(self.model, adapter_name)
        for _, layer in self.model.named_modules():
            if isinstance(layer, MPLoraLayer) and adapter_name in layer.lora_A_dict:
                parts = [(w * layer.scaling[name], layer.lora_A_dict[name].weight, layer.lora_B_dict[name].weight)
                         for name, w in zip(adapters, weights) if name in layer.lora_A_dict]
                a_new, b_new = layer.lora_A_dict[adapter_name].weight, layer.lora_B_dict[adapter_name].weight
                a_new.zero_()
                b_new.zero_()
                if combination_type == "cat":
                    row = 0
                    for scale, a, b in parts:
                        a_new[row: row + a.shape[0]] = a
                        b_new[:, row: row + a.shape[0]] = scale * b
                        row += a.shape[0]
                elif parts:
                    delta = sum(scale * b @ a for scale, a, b in parts)
                    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
                    keep = min(rank, s.shape[0])
                    b_new[:, :keep] = u[:, :keep] * s[:keep]
                    a_new[:keep] = vh[:keep]
