"""The adapted projection: vLLM's own linear layer, called as it is, plus the adapter's update on each output slice.

vLLM fuses q, k, v into one ``qkv_proj`` and gate, up into one ``gate_up_proj``; HF (and so PEFT) adapts each of
them on its own. Each adapted slice gets a real tuner layer of the package (``MoRLayer``, ``LoRATRFLayer``,
``MPLoraLayer``, ...), made by PEFT's own injection (``LowRankModel``: target_modules, exclude_modules,
layers_to_transform, rank_pattern, alpha_pattern as for transformers) over a skeleton of placeholders shaped like
the HF modules; the projection calls vLLM's layer once and hands each slice of its output to that slice's layer's
``_adapter_output``, the same inference path ``plugin.chat`` runs. No adapter math lives here.

vLLM's layer is only ever called: on CPU its weight is repacked after loading and ``layer.weight`` emptied.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ...tuners.base import LowRankLayer, principal_init


class SliceShape(nn.Linear):
    """What a slice's tuner layer wraps: the HF module's (d_in, d_out), no weight. PEFT places the adapter on
    ``weight``'s device and dtype, so ``weight`` is an empty non-persistent buffer: no parameter, so vLLM expects no
    checkpoint tensor for it. Never called: vLLM's fused layer computes W x for every slice at once."""

    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype, device: torch.device | str) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(0, dtype=dtype, device=device), persistent=False)
        self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a SliceShape only gives an adapter its shape; vLLM's own layer computes W x")


@dataclass
class Slice:
    """One HF projection inside a vLLM layer's output: ``[start, end)`` of the last dimension."""

    hf_name: str  # the HF module's full name, e.g. model.layers.0.self_attn.q_proj
    shard_id: str | int | None  # what vLLM's WeightsMapper tags the HF tensor with (None: an unfused layer)
    start: int
    end: int


def _linear_types():
    from vllm.model_executor.layers.linear import (
        ColumnParallelLinear,
        LinearBase,
        MergedColumnParallelLinear,
        QKVParallelLinear,
        RowParallelLinear,
    )

    return LinearBase, QKVParallelLinear, MergedColumnParallelLinear, ColumnParallelLinear, RowParallelLinear


def slices_of(name: str, layer: nn.Module, packed: dict[str, list[str]],
              shard_of: dict[str, str | int]) -> list[Slice] | None:
    """The HF projections in vLLM layer ``name``'s output, in order; None for a layer that is none of vLLM's
    linear types."""
    linear, qkv, merged, column, row = _linear_types()
    if not isinstance(layer, linear):
        return None
    parent, _, own = name.rpartition(".")
    prefix = f"{parent}." if parent else ""
    if isinstance(layer, qkv):
        sizes = [layer.num_heads * layer.head_size, layer.num_kv_heads * layer.head_size,
                 layer.num_kv_heads * layer.v_head_size]
    elif isinstance(layer, merged):
        sizes = [size // layer.tp_size for size in layer.output_sizes]
    elif isinstance(layer, column):
        sizes = [layer.output_size_per_partition]
    elif isinstance(layer, row):
        sizes = [layer.output_size]
    else:  # ReplicatedLinear and others
        sizes = [layer.output_size]
    members = packed.get(own, [own]) if len(sizes) > 1 else [own]
    if len(members) != len(sizes):
        raise ValueError(f"{name}: vLLM's packed_modules_mapping names {members} but the layer has {len(sizes)} "
                         "output slices")
    out, start = [], 0
    for index, (member, size) in enumerate(zip(members, sizes)):
        shard = shard_of.get(member, index) if len(sizes) > 1 else None
        out.append(Slice(prefix + member, shard, start, start + size))
        start += size
    return out


class AdaptedProjection(nn.Module):
    """vLLM's layer (``base_layer``) with adapter ``adapter_name`` on some of its output slices (``adapters``: the
    tuner layer of each adapted slice, by its HF module's own name: ``q_proj``).

    Loads its own tensors (vLLM's ``AutoWeightsLoader`` hands a child with ``load_weights`` everything under its
    name): the adapter's by the ``shard_id`` vLLM's mapper tagged them with, the base's through vLLM's layer."""

    # vLLM fuses no activation quantization into this layer's input (``maybe_fused_act_quant``): the adapter reads x
    requires_unquantized_input = True

    def __init__(self, base_layer: nn.Module, slices: list[Slice], layers: dict[str, LowRankLayer],
                 adapter_name: str) -> None:
        super().__init__()
        if getattr(base_layer, "skip_bias_add", False) and getattr(base_layer, "bias", None) is not None:
            raise NotImplementedError(f"{getattr(base_layer, 'prefix', '')}: a layer that returns its bias apart "
                                      "(skip_bias_add) is not supported: the adapter needs W x + b")
        if getattr(base_layer, "tp_size", 1) > 1:
            raise NotImplementedError("tensor parallelism is not supported yet for these adapters: run with "
                                      "tensor_parallel_size=1")
        self.base_layer = base_layer
        self.adapter_name = adapter_name
        self.adapters = nn.ModuleDict({_key(s.hf_name): layers[s.hf_name] for s in slices if s.hf_name in layers})
        self.bounds = [(s.start, s.end, _key(s.hf_name) if s.hf_name in layers else None) for s in slices]
        self.shard_to_key = {s.shard_id: _key(s.hf_name) for s in slices}
        self.return_bias = getattr(base_layer, "return_bias", True)
        first = next(iter(layers.values()))
        self.adapter_dicts = frozenset(first.adapter_layer_names)

    def forward(self, x: torch.Tensor):
        out = self.base_layer(x)
        bias = None
        if self.return_bias:
            out, bias = out
        pieces = []
        for start, end, key in self.bounds:
            piece = out if len(self.bounds) == 1 else out[..., start:end]
            if key is not None:
                piece = self.adapters[key]._adapter_output(self.adapter_name, x, piece)
            pieces.append(piece)
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
        return (out, bias) if self.return_bias else out

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loaded, base = set(), []
        for name, tensor in weights:
            head, _, rest = name.partition(".")
            if head not in self.adapter_dicts:
                base.append((name, tensor))
                continue
            shard = getattr(tensor, "shard_id", None)
            key = self.shard_to_key.get(shard)
            if key not in self.adapters:
                raise ValueError(f"{getattr(self.base_layer, 'prefix', '')}: the checkpoint has adapter tensor {name} "
                                 f"(shard {shard!r}) for a projection this adapter's config does not target")
            module = getattr(self.adapters[key], head)[self.adapter_name]
            param = module.get_parameter(rest or "weight")
            if param.shape != tensor.shape:
                raise ValueError(f"{getattr(self.base_layer, 'prefix', '')}: adapter tensor {name} (shard {shard!r}) "
                                 f"has shape {tuple(tensor.shape)}, the adapter's layer {tuple(param.shape)}")
            with torch.no_grad():
                param.copy_(tensor)
            loaded.add(f"adapters.{key}.{head}.{self.adapter_name}.{rest or 'weight'}")
        return loaded | {f"base_layer.{name}" for name in self._load_base(base)}

    def _load_base(self, weights: list[tuple[str, torch.Tensor]]) -> set[str]:
        own = getattr(self.base_layer, "load_weights", None)
        if callable(own):  # fused layers load by the tensors' shard_id
            return set(own(iter(weights)))
        from vllm.model_executor.models.utils import AutoWeightsLoader

        return AutoWeightsLoader(self.base_layer).load_weights(weights)


def _key(hf_name: str) -> str:
    return hf_name.rpartition(".")[2]  # q_proj: unique inside one vLLM layer


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root
    for part in parent_name.split(".") if parent_name else []:
        if part not in parent._modules:
            parent.add_module(part, nn.Module())
        parent = parent._modules[part]
    parent.add_module(child, module)


def install(model: nn.Module, hf_config, peft_config, model_cls: type, adapter_name: str) -> list[str]:
    """Replace each vLLM linear layer of ``model`` that holds a projection the adapter targets by an
    ``AdaptedProjection``; returns the adapted HF module names. The tuner layers come from PEFT's injection
    (``model_cls``, the method's ``LowRankModel``) into a skeleton of ``SliceShape`` placeholders named as the HF
    model's modules, so the targeting is PEFT's own."""
    if getattr(peft_config, "modules_to_save", None):
        raise NotImplementedError(f"modules_to_save ({peft_config.modules_to_save}) cannot be served with vLLM yet")
    if getattr(peft_config, "target_parameters", None):
        raise NotImplementedError("target_parameters (MoE expert tensors) cannot be served with vLLM yet")
    if principal_init(peft_config.init_weights):
        raise NotImplementedError(f"an adapter initialised with {peft_config.init_weights!r} moves W's principal part "
                                  "out of the base weights: export the residual base (merge it first) to serve it")
    packed = dict(getattr(type(model), "packed_modules_mapping", {}) or {})
    mapper = getattr(type(model), "hf_to_vllm_mapper", None)
    shard_of = {}
    for hf_suffix, (_, shard) in (getattr(mapper, "orig_to_new_stacked", None) or {}).items():
        shard_of[hf_suffix.lstrip(".")] = shard
    found: dict[str, tuple[nn.Module, list[Slice]]] = {}
    skeleton = nn.Module()
    for name, layer in model.named_modules():
        slices = slices_of(name, layer, packed, shard_of)
        if slices is None:
            continue
        found[name] = (layer, slices)
        device = next(layer.parameters()).device
        for s in slices:  # adapters in float32 (the package's default), cast in and out by the tuner layers
            _set_module(skeleton, s.hf_name, SliceShape(layer.input_size, s.end - s.start, torch.float32, device))
    skeleton.config = hf_config  # PEFT reads model_type (default targets) and tie_word_embeddings from it
    peft_config = copy.deepcopy(peft_config)
    peft_config.init_weights = True  # the tensors come from the checkpoint; no init reads the (absent) base weight
    peft_config.inference_mode = True
    model_cls(skeleton, peft_config, adapter_name)
    adapted = {name: module for name, module in skeleton.named_modules() if isinstance(module, LowRankLayer)}
    for module in adapted.values():
        module.requires_grad_(False).eval()
    for name, (layer, slices) in found.items():
        layers = {s.hf_name: adapted[s.hf_name] for s in slices if s.hf_name in adapted}
        if layers:
            _set_module(model, name, AdaptedProjection(layer, slices, layers, adapter_name))
    return sorted(adapted)
