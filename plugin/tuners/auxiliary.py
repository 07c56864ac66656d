"""One small API over the adapter layers' auxiliary losses and router telemetry.

The trainer calls ``weighted_aux_loss``; plots and logging call ``router_weights``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn

from ..utils.errors import UserError
from .base import LowRankLayer
from .mor import MoRLayer


def adapter_layers(model: nn.Module, layer_cls: type[LowRankLayer] = LowRankLayer) -> Iterator[tuple[str, LowRankLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, layer_cls):
            yield name, module


def aux_loss_terms(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Unweighted auxiliary terms of each active adapter, summed over layers: {adapter: {term: loss}}."""
    terms: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for _, layer in adapter_layers(model):
        if layer.disable_adapters or layer.merged:
            continue
        for adapter in layer.active_adapters:
            if adapter not in layer.lora_A_dict:
                continue
            for term, loss in layer.aux_losses(adapter).items():
                prev = terms[adapter].get(term)
                terms[adapter][term] = loss if prev is None else prev + loss.to(prev.device)
    return dict(terms)


def weighted_aux_loss(model: nn.Module, step: int) -> tuple[torch.Tensor | None, dict[str, float]]:
    """(sum of weight * term over active adapters, {term: unweighted value}) at optimiser step ``step``.

    ``model`` is a PeftModel (it carries ``peft_config``); the total is None when no term has a non-zero weight.
    """
    total, logs = None, {}
    for adapter, terms in aux_loss_terms(model).items():
        weights = model.peft_config[adapter].aux_loss_weights(step)
        for term, loss in terms.items():
            logs[term] = logs.get(term, 0.0) + loss.detach().float().item()
            weight = weights.get(term, 0.0)
            if weight:
                _check_has_gradient(model, adapter, term, loss)
                total = weight * loss if total is None else total + weight * loss.to(total.device)
    return total, logs


class AuxLossWithoutGradient(UserError):
    """An auxiliary term that should train the adapter was computed without a graph: adding it would change nothing."""


def _check_has_gradient(model: nn.Module, adapter: str, term: str, loss: torch.Tensor) -> None:
    if loss.requires_grad or not torch.is_grad_enabled():
        return
    if any(p.requires_grad for n, p in model.named_parameters() if f".{adapter}." in n or n.endswith(f".{adapter}")):
        raise AuxLossWithoutGradient(
            f"the auxiliary loss {term} was computed without gradients, so it would silently train nothing: "
            "reentrant gradient checkpointing runs the forward under no_grad; use non-reentrant checkpointing "
            "(gradient_checkpointing_kwargs={'use_reentrant': False}; in PEFT's prepare_model_for_kbit_training too)"
        )


def _per_router(model: nn.Module, adapter_name: str | None, read) -> dict:
    """``read(layer, adapter)`` of every MoR layer that has gates from the last forward pass."""
    out = {}
    for name, layer in adapter_layers(model, MoRLayer):
        adapter = adapter_name or layer.active_adapters[0]
        if adapter in layer.last_gates:
            out[name] = read(layer, adapter)
    return out


def router_weights(model: nn.Module, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
    """Mean router probability per expert (shape N) of every MoR layer, from the last forward pass."""
    return _per_router(model, adapter_name, MoRLayer.router_mean)


def router_entropies(model: nn.Module, adapter_name: str | None = None) -> dict[str, float]:
    """Mean per-token entropy of the router's distribution, per MoR layer, from the last forward pass."""
    return _per_router(model, adapter_name, MoRLayer.router_entropy)


def orthogonality_per_layer(model: nn.Module, adapter_name: str | None = None) -> dict[str, float]:
    """Unweighted MPLoRA orthogonality loss of each layer in the last training forward (telemetry and plots)."""
    from .mplora import MPLoraLayer

    out = {}
    for name, layer in adapter_layers(model, MPLoraLayer):
        loss = layer.last_aux.get(adapter_name or layer.active_adapters[0], {}).get("orth_loss")
        if loss is not None:
            out[name] = float(loss)
    return out
