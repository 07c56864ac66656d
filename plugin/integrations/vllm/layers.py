"""The adapted projection: vLLM's own linear layer, called as it is, plus the adapter's update on each output slice.

vLLM fuses q, k, v into one ``qkv_proj`` and gate, up into one ``gate_up_proj``; HF (and so PEFT) adapts each of
them on its own. Each adapted slice gets a real tuner layer of the package (``MoRLayer``, ``LoRATRFLayer``,
``MPLoraLayer``, ...), made by PEFT's own injection (``LowRankModel``: target_modules, exclude_modules,
layers_to_transform, rank_pattern, alpha_pattern as for transformers) over a skeleton of placeholders shaped like
the HF modules; the projection calls vLLM's layer once and hands each slice of its output (a view) to that slice's
layer's ``_adapter_output``, the same inference path ``plugin.chat`` runs, which adds its update into the slice in
place: nothing is concatenated afterwards. No adapter math lives here.

vLLM's layer is only ever called: on CPU its weight is repacked after loading and ``layer.weight`` emptied.

Under tensor parallelism every rank holds the full adapter (the HF module's shapes) and gathers what its math
needs: a column-parallel layer all-gathers its adapted output slices into the HF ones and keeps its own shard of
the adapted result; a row-parallel layer all-gathers its input. Each rank so computes exactly what tp 1 does.
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
    """One HF projection inside a vLLM layer's output: ``[start, end)`` of this rank's last dimension, which is
    ``[offset, offset + end - start)`` of the HF projection's output (``full`` wide)."""

    hf_name: str  # the HF module's full name, e.g. model.layers.0.self_attn.q_proj
    shard_id: str | int | None  # what vLLM's WeightsMapper tags the HF tensor with (None: an unfused layer)
    start: int
    end: int
    full: int
    offset: int = 0
    replicas: int = 1  # ranks holding the same piece: vLLM replicates k/v heads when they are fewer than the ranks


def _linear_types():
    from vllm.model_executor.layers.linear import (
        ColumnParallelLinear,
        LinearBase,
        MergedColumnParallelLinear,
        QKVParallelLinear,
    )

    return LinearBase, QKVParallelLinear, MergedColumnParallelLinear, ColumnParallelLinear


def slices_of(name: str, layer: nn.Module, packed: dict[str, list[str]],
              shard_of: dict[str, str | int]) -> list[Slice] | None:
    """The HF projections in vLLM layer ``name``'s output, in order, with this rank's part of each; None for a layer
    that is none of vLLM's linear types."""
    linear, qkv, merged, column = _linear_types()
    if not isinstance(layer, linear):
        return None
    parent, _, own = name.rpartition(".")
    prefix = f"{parent}." if parent else ""
    tp, rank = getattr(layer, "tp_size", 1), getattr(layer, "tp_rank", 0)
    if isinstance(layer, column) and layer.gather_output and tp > 1:
        if isinstance(layer, (qkv, merged)):  # its gathered output is rank-major, not the HF slices in turn
            raise NotImplementedError(f"{name}: a fused layer with gather_output is not supported at tp > 1")
        tp, rank = 1, 0  # its output is the full one
    if isinstance(layer, qkv):  # (local size, full size, ranks per piece) of q, k, v
        kv_replicas = layer.num_kv_head_replicas
        parts = [(layer.num_heads * layer.head_size, layer.total_num_heads * layer.head_size, 1),
                 (layer.num_kv_heads * layer.head_size, layer.total_num_kv_heads * layer.head_size, kv_replicas),
                 (layer.num_kv_heads * layer.v_head_size, layer.total_num_kv_heads * layer.v_head_size, kv_replicas)]
    elif isinstance(layer, merged):
        parts = [(size // tp, size, 1) for size in layer.output_sizes]
    elif isinstance(layer, column):
        parts = [(layer.output_size // tp, layer.output_size, 1)]
    else:  # RowParallelLinear (its output is all-reduced: full), ReplicatedLinear and others
        parts = [(layer.output_size, layer.output_size, tp)]
    members = packed.get(own, [own]) if len(parts) > 1 else [own]
    if len(members) != len(parts):
        raise ValueError(f"{name}: vLLM's packed_modules_mapping names {members} but the layer has {len(parts)} "
                         "output slices")
    out, start = [], 0
    for index, (member, (size, full, replicas)) in enumerate(zip(members, parts)):
        shard = shard_of.get(member, index) if len(parts) > 1 else None
        out.append(Slice(prefix + member, shard, start, start + size, full, rank // replicas * size, replicas))
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
        tp_size = getattr(base_layer, "tp_size", 1)
        if tp_size > 1:
            _check_tp(base_layer, tp_size)
        self.base_layer = base_layer
        self.adapter_name = adapter_name
        self.adapters = nn.ModuleDict({_key(s.hf_name): layers[s.hf_name] for s in slices if s.hf_name in layers})
        self.slices = slices
        self.keys = [_key(s.hf_name) if s.hf_name in layers else None for s in slices]
        self.shard_to_key = {s.shard_id: _key(s.hf_name) for s in slices}
        self.tp_size = tp_size
        self.gather_input = tp_size > 1 and getattr(base_layer, "input_is_parallel", False)
        self.gather_output = any(s.full != s.end - s.start for s, key in zip(slices, self.keys) if key is not None)
        self.return_bias = getattr(base_layer, "return_bias", True)
        first = next(iter(layers.values()))
        self.adapter_dicts = frozenset(first.adapter_layer_names)

    def forward(self, x: torch.Tensor):
        out = self.base_layer(x)
        bias = None
        if self.return_bias:
            out, bias = out
        if self.gather_input:  # the adapter reads all of x (LoRATRF's gate: cos(x, t))
            x = _all_gather(x)
        full = self._full_slices(out) if self.gather_output else {}
        for s, key in zip(self.slices, self.keys):
            if key is None:
                continue
            piece = out if len(self.slices) == 1 else out[..., s.start:s.end]  # a view: the result lands in out
            adapted = self.adapters[key]._adapter_output(self.adapter_name, x, full.get(key, piece))
            if key in full:
                piece.copy_(adapted[..., s.offset:s.offset + s.end - s.start])
            elif adapted is not piece:  # a method whose inference path does not add in place
                piece.copy_(adapted)
        return (out, bias) if self.return_bias else out

    def _full_slices(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The HF output of each adapted slice, from every rank's piece of it (one all-gather): the tuner layer is the
        HF module's, and LoRATRF's output gate reads all of h."""
        adapted = [(s, key) for s, key in zip(self.slices, self.keys) if key is not None]
        local = torch.cat([out[..., s.start:s.end] for s, _ in adapted], dim=-1)
        everyone = _all_gather(local).unflatten(-1, (self.tp_size, local.shape[-1]))  # [..., rank, adapted width]
        full, at = {}, 0
        for s, key in adapted:
            width = s.end - s.start
            # a replicated piece (k/v heads) once: rank j * replicas holds the j-th
            full[key] = everyone[..., ::s.replicas, at:at + width].flatten(-2)
            at += width
        return full

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


def _check_tp(layer: nn.Module, tp_size: int) -> None:
    from vllm.distributed import get_tensor_model_parallel_world_size

    prefix = getattr(layer, "prefix", "")
    if tp_size != get_tensor_model_parallel_world_size():
        raise NotImplementedError(f"{prefix}: a layer sharded over {tp_size} of the "
                                  f"{get_tensor_model_parallel_world_size()} tensor-parallel ranks is not supported")
    if getattr(layer, "input_is_parallel", None) is not None and not layer.reduce_results:
        raise NotImplementedError(f"{prefix}: a row-parallel layer with reduce_results=False (each rank's output a "
                                  "partial sum) is not supported at tp > 1: the adapter needs the full W x")


def _all_gather(tensor: torch.Tensor) -> torch.Tensor:
    from vllm.distributed import tensor_model_parallel_all_gather

    return tensor_model_parallel_all_gather(tensor.contiguous())


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
            _set_module(skeleton, s.hf_name, SliceShape(layer.input_size, s.full, torch.float32, device))
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
