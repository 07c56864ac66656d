"""What MPLoRA, MoR and LoRATRF share: a low-rank pair (A, B) beside a frozen linear layer.

Each method subclasses the three pieces here (config, layer, tuner model) and adds only its own math,
the way PEFT's own tuners are laid out (``peft/tuners/<method>/{config,layer,model}.py``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_adapters_to_merge
from peft.utils.other import AuxiliaryTrainingWrapper, get_pattern_key
from torch import nn
from transformers.pytorch_utils import Conv1D


PISSA = re.compile(r"pissa(_niter_[1-9][0-9]*)?")  # LoRA's spellings: full SVD, or randomised with K iterations


def principal_init(init_weights) -> bool:
    """PiSSA or OLoRA: the init moves W's principal part from the base into A and B."""
    return init_weights == "olora" or bool(PISSA.fullmatch(str(init_weights)))


@dataclass
class LowRankConfig(PeftConfig):
    """Fields every method here shares with ``peft.LoraConfig`` (same names, same meaning)."""

    r: int = field(default=8, metadata={"help": "Rank of the low-rank update."})
    lora_alpha: float = field(default=16, metadata={"help": "Scaling numerator: s = lora_alpha / r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    target_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Module names (or one regex) to adapt; None uses the method's defaults."}
    )
    exclude_modules: Optional[Union[list[str], str]] = field(default=None, metadata={"help": "Module names to skip."})
    use_rslora: bool = field(default=False, metadata={"help": "s = lora_alpha / sqrt(r) (rank-stabilised)."})
    fan_in_fan_out: bool = field(default=False, metadata={"help": "True for GPT-2 style Conv1D weights."})
    modules_to_save: Optional[list[str]] = field(
        default=None, metadata={"help": "Extra modules trained in full and saved (e.g. a classifier head)."}
    )
    layers_to_transform: Optional[Union[list[int], int]] = field(default=None)
    layers_pattern: Optional[Union[list[str], str]] = field(default=None)
    rank_pattern: dict = field(default_factory=dict, metadata={
        "help": "Layer name (regex, matched at the end of the module's name as LoRA does) -> its own r, e.g. "
                "{'down_proj': 16}; a key that matches no adapted layer is an error."})
    alpha_pattern: dict = field(default_factory=dict, metadata={
        "help": "Layer name (regex, as rank_pattern) -> its own lora_alpha."})
    target_parameters: Optional[list[str]] = field(default=None, metadata={
        "help": "Raw parameters to adapt, e.g. a MoE block's 3D expert tensors (mlp.experts.gate_up_proj), as LoRA's: "
                "MPLoRA (a weight delta per expert); MoR and LoRATRF refuse it (their update depends on each token)."})
    init_weights: Union[bool, str] = field(
        default=True,
        metadata={"help": "True: the paper's init (identity at start; A kaiming-uniform as LoRA's). 'gaussian': the "
                          "same with A ~ normal(0, 1/r), LoRA's 'gaussian'. 'pissa' / 'pissa_niter_K' (fast SVD) / "
                          "'olora' (QR): A and B take W's principal part and the base keeps the residual, so the "
                          "output at init is unchanged, as LoRA's. False: small random values everywhere (tests)."},
    )

    # set by each subclass: the PeftType member name; the method's name and paper for the model card
    _peft_type_name = ""
    # whether the update is a weight delta s B A (then a raw parameter can take it: target_parameters)
    _weight_delta = False
    _display_name = ""
    _paper = ""
    # the method's layer class, set by ``register_method`` (the card says whether it merges)
    _layer_cls = None
    # a prefix of the subclass's own field names that its YAML keys leave out (LoRATRF: trf_rank -> loratrf_rank)
    _field_prefix = ""

    def __post_init__(self):
        super().__post_init__()
        from peft.utils.peft_types import PeftType

        self.peft_type = PeftType[self._peft_type_name]
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ValueError(f"r must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        for name in ("rank_pattern", "alpha_pattern"):
            pattern = getattr(self, name)
            if not isinstance(pattern, dict) or not all(isinstance(k, str) for k in pattern):
                raise ValueError(f"{name} must map layer names (regexes) to numbers, got {pattern!r}")
        for key, r in self.rank_pattern.items():
            if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
                raise ValueError(f"rank_pattern[{key!r}] must be a positive integer, got {r!r}")
        if self.target_parameters and not self._weight_delta:
            raise ValueError(f"target_parameters is not supported for {self._display_name}: its update depends on "
                             "each token, so it is no weight delta that a parameter (unlike a layer's call) could "
                             "take; adapt the experts with MPLoRA or PEFT's LoRA")
        if not (isinstance(self.init_weights, bool) or self.init_weights in ("gaussian", "olora")
                or PISSA.fullmatch(str(self.init_weights))):
            raise ValueError(f"init_weights must be True, False, 'gaussian', 'pissa', 'pissa_niter_K' or 'olora', got "
                             f"{self.init_weights!r} (of LoRA's other init_lora_weights choices, EVA, CorDA and LoftQ "
                             "are not implemented for these methods)")

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """PEFT's save, then the model card section naming the method and how to load it (PEFT's own card, written
        just before by ``PeftModel.save_pretrained``, names only PEFT)."""
        super().save_pretrained(save_directory, **kwargs)
        from .card import PACKAGE, add_section, method_section

        name = self._peft_type_name.lower()
        layer = self._layer_cls
        merge_note = ("exact (`merge_and_unload()`, or `python -m plugin.export --merge`); `python -m plugin.export "
                      "--as-lora` rewrites it as a plain LoRA adapter" if layer.mergeable else
                      f"{layer.not_mergeable_reason}. Serve or chat with it unmerged: `python -m plugin.chat`.")
        section = method_section(self._display_name, self._paper, self.base_model_name_or_path, merge_note)
        add_section(save_directory, "method", section, [name, PACKAGE], self.base_model_name_or_path, first=True)

    def aux_loss_weights(self, step: int) -> dict[str, float]:
        """Weight of each auxiliary loss term at optimiser step ``step`` (terms missing here are not added)."""
        return {}

    @staticmethod
    def _check_positive_int(name: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def inject_adapter_names(module, args, kwargs, adapter_names):
    kwargs["adapter_names"] = adapter_names
    return args, kwargs


def in_out_features(layer: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of a linear-like layer; bitsandbytes Linear4bit/8bitLt subclass nn.Linear."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, Conv1D):
        return layer.weight.shape  # Conv1D stores (in, out)
    raise TypeError(
        f"cannot adapt a {type(layer).__name__}: only torch.nn.Linear, transformers Conv1D and "
        "bitsandbytes Linear4bit/Linear8bitLt layers are supported; pick other target_modules"
    )


def is_quantized(layer: nn.Module) -> bool:
    return type(layer).__module__.startswith("bitsandbytes")


@functools.cache
def _sharding_wrappers() -> tuple[type, ...]:
    if not torch.distributed.is_available():
        return ()
    from torch.distributed.fsdp import FullyShardedDataParallel

    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6 keeps FSDP2 under _composable
        from torch.distributed._composable.fsdp import FSDPModule
    return FullyShardedDataParallel, FSDPModule


def is_sharded(module: nn.Module) -> bool:
    """Wrapped by FSDP1/FSDP2 or partitioned by ZeRO-3: its weight exists in full only during its own call.
    (Asked on every no-grad forward of every layer, so the wrapper classes are imported once.)"""
    return isinstance(module, _sharding_wrappers()) or any(hasattr(p, "ds_id") for p in module._parameters.values())


def transposed_weight(linear: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """W^T of an adapter Linear, from calling it on the identity (in_features x in_features, in ``like``'s dtype):
    the weight is used inside the module's own call, where sharding engines hold it in full (PEFT's DoRA does the
    same). For B (r -> d_out) that is an r x r input."""
    return linear(torch.eye(linear.in_features, dtype=like.dtype, device=like.device))


def add_product_(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``result + a @ b``, written into ``result``: for the inference paths, where ``result`` is the layer's own
    fresh output (or the slice of one that vLLM's fused layer hands over, so the sum lands in place). One fused GEMM
    where the dtypes agree, and no second tokens x d_out tensor: allocating one cost more than the add at prefill."""
    if result.dtype != b.dtype:
        return result.add_((a @ b).to(result.dtype))
    if result.dim() == 2:
        return result.addmm_(a, b)
    if result.is_contiguous():
        result.view(-1, result.shape[-1]).addmm_(a.reshape(-1, a.shape[-1]), b)
        return result
    return result.add_(a @ b)


class Scale(nn.Module):
    """A trainable tensor applied by elementwise product inside its own call (MoR's Omega_A and Omega_B)."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class ResidualFactors(nn.Module):
    """The A and B a PiSSA / OLoRA residual was taken with: buffers (saved, never trained)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", a.detach().clone().float())
        self.register_buffer("B", b.detach().clone().float())


class UnappliedAuxLoss(UserWarning):
    """An adapter's auxiliary term was computed in two training forwards and never added to a loss in between: the
    trainer is not one of ours (a plain transformers or TRL trainer drops it)."""

    def __init__(self, term: str):
        super().__init__(f"the adapter's auxiliary loss {term} is computed but no trainer adds it to the loss, so it "
                         "trains nothing: train with this package's trainers (plugin.SFTTrainer, plugin.DPOTrainer, "
                         "plugin.GRPOTrainer, ...; plugin.train uses them) or add plugin.weighted_aux_loss(model, "
                         "step) to your loss")


class LowRankLayer(nn.Module, BaseTunerLayer):
    """Base of the three adapter layers.

    Subclasses set ``prefix`` (e.g. ``"mor_"``), list their per-adapter module dicts in ``adapter_layer_names``
    (A and B first) and ``other_param_names``, and implement ``_adapter_output``.

    Every trainable tensor is the ``weight`` of a leaf module and is used only inside that module's call: FSDP and
    DeepSpeed ZeRO-3 materialise a module's parameters only while it runs (PEFT's ``fsdp_auto_wrap_policy`` shards
    each trainable leaf on its own), so a weight read from outside its module's call is a shard there.
    """

    prefix: str = ""
    # dicts that 0.1.0 stored as bare parameters (``{name}.{adapter}``); now modules whose weight is the same tensor
    legacy_parameter_dicts: tuple[str, ...] = ()
    mergeable = False
    not_mergeable_reason = ""
    # per-adapter bookkeeping shared by every method; subclasses extend this tuple.
    # pending_aux: this forward's auxiliary terms, handed to the trainer once; last_aux: their values, for telemetry
    other_param_names: tuple[str, ...] = ("r", "lora_alpha", "scaling", "lora_dropout", "inference_cache", "pending_aux",
                                          "last_aux")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: LowRankConfig, **kwargs) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.lora_dropout = nn.ModuleDict({})
        for name in self.other_param_names:  # r, lora_alpha, scaling and method-specific per-adapter values
            if not hasattr(self, name):
                setattr(self, name, {})
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ModuleDict({}))
        self._register_load_state_dict_pre_hook(self._load_legacy_layout)
        self.register_load_state_dict_post_hook(self._after_load)
        self.residual_applied: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self.kwargs = kwargs
        self.fan_in_fan_out = kwargs.get("fan_in_fan_out", False)
        # weights adapted at once: 1 for a layer, one per expert for a stacked 3D expert tensor (MPLoRA's ParamWrapper)
        self.stacked = 1
        self.in_features, self.out_features = self.adapted_shape()
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def adapted_shape(self) -> tuple[int, int]:
        """(d_in, d_out) of the adapted weight."""
        return in_out_features(self.get_base_layer())

    def adapted_weight(self) -> nn.Parameter:
        """The weight a merge writes into."""
        return self.get_base_layer().weight

    def _load_legacy_layout(self, state_dict, prefix, *args) -> None:
        # PEFT 0.20 maps a 0.1.0 key to ``{name}.{adapter}``; PEFT >= 0.21 calls LowRankModel's remap instead
        for name in self.legacy_parameter_dicts:
            for adapter in getattr(self, name):
                old = f"{prefix}{name}.{adapter}"
                if old in state_dict:
                    state_dict[f"{old}.weight"] = state_dict.pop(old)

    # A and B are the first two adapter dicts of every method
    @property
    def lora_A_dict(self) -> nn.ModuleDict:
        return getattr(self, self.adapter_layer_names[0])

    @property
    def lora_B_dict(self) -> nn.ModuleDict:
        return getattr(self, self.adapter_layer_names[1])

    def update_layer(self, adapter_name: str, config: LowRankConfig) -> None:
        r = config.r
        self.check_config(config)
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = config.lora_alpha
        self.scaling[adapter_name] = config.lora_alpha / (math.sqrt(r) if config.use_rslora else r)
        self.lora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.create_method_params(adapter_name, config)  # first: it validates the config against this layer
        self.lora_A_dict[adapter_name] = nn.Linear(self.in_features, r * self.stacked, bias=False)
        self.lora_B_dict[adapter_name] = nn.Linear(r * self.stacked, self.out_features, bias=False)
        self.reset_parameters(adapter_name, config.init_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def check_config(self, config: LowRankConfig) -> None:
        """Raise a clear ValueError if ``config`` does not fit this layer (before anything is created)."""

    def create_method_params(self, adapter_name: str, config: LowRankConfig) -> None:
        """Create the method's own per-adapter parameters (beyond A and B)."""

    @torch.no_grad()
    def reset_parameters(self, adapter_name: str, init_weights: bool | str) -> None:
        # A like PEFT LoRA's A (kaiming-uniform, or normal(0, 1/r) for 'gaussian'); B zero so the adapter starts as
        # identity
        a = self.lora_A_dict[adapter_name].weight
        if init_weights == "gaussian":
            nn.init.normal_(a, std=1 / self.r[adapter_name])
        else:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        b = self.lora_B_dict[adapter_name].weight
        if init_weights:
            nn.init.zeros_(b)
        else:
            nn.init.normal_(b, std=0.02)
        if principal_init(init_weights):
            self._principal_init(adapter_name, init_weights)

    def _principal_init(self, adapter_name: str, how: str) -> None:
        """PiSSA (SVD) or OLoRA (QR), in LoRA's formulas: s B A = W's principal rank-r part, W keeps the rest. The
        factors the residual was taken with are kept (and saved) in ``{prefix}residual``: loading the adapter onto
        the original base puts that same residual under the trained A and B, however the SVD came out there."""
        base = self.get_base_layer()
        if is_quantized(base):
            raise ValueError(f"init_weights={how!r} needs a full-precision base: the residual W - s B A is written "
                             "into the base weight; load it without load_in_4bit/8bit, or use init_weights=True")
        weight = base.weight.data
        w = (weight.T if self.fan_in_fan_out else weight).float()
        r, s = self.r[adapter_name], self.scaling[adapter_name]
        if how == "olora":
            q, upper = torch.linalg.qr(w)
            b, a = q[:, :r], upper[:r]
        else:
            if how == "pissa":
                u, values, vh = torch.linalg.svd(w, full_matrices=False)
            else:
                u, values, v = torch.svd_lowrank(w, q=r, niter=int(how.rsplit("_", 1)[1]))
                vh = v.T
            root = (values[:r] / s).sqrt()
            b, a = u[:, :r] * root, root[:, None] * vh[:r]
        self.lora_A_dict[adapter_name].weight.data = a.contiguous().to(self.lora_A_dict[adapter_name].weight.dtype)
        self.lora_B_dict[adapter_name].weight.data = b.contiguous().to(self.lora_B_dict[adapter_name].weight.dtype)
        holder = self._modules.setdefault(self.prefix + "residual", nn.ModuleDict())
        holder[adapter_name] = ResidualFactors(a, b)
        self._shift_base(adapter_name, -(s * b @ a))

    def _shift_base(self, adapter_name: str, delta: torch.Tensor) -> None:
        base = self.get_base_layer()
        base.weight.data += (delta.T if self.fan_in_fan_out else delta).to(base.weight.dtype)
        self.residual_applied[adapter_name] = tuple(t.clone() for t in self._residual_factors(adapter_name))

    def _residual_factors(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        factors = self._modules[self.prefix + "residual"][adapter_name]
        return factors.A, factors.B

    def _after_load(self, module, incompatible_keys) -> None:
        # a loaded PiSSA / OLoRA adapter brings the factors its residual was taken with: re-take it with those
        for name, (a_old, b_old) in list(self.residual_applied.items()):
            a_new, b_new = self._residual_factors(name)
            if not (torch.equal(a_new, a_old) and torch.equal(b_new, b_old)):
                s = self.scaling[name]
                self._shift_base(name, s * (b_old @ a_old - b_new.float() @ a_new.float()))

    # ---- forward -------------------------------------------------------------------------------------------
    def low_rank(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """z = A dropout(x), with x cast to the adapter dtype."""
        a = self.lora_A_dict[adapter_name]
        return a(self.lora_dropout[adapter_name](x.to(a.weight.dtype)))

    def inference_path(self, adapter_name: str) -> bool:
        """Evaluation or generation (eval mode, no graph) with weights held in full (no sharding engine): the layer
        may read its weights directly and cache what it builds from them. A no-grad forward in train mode is not
        one: reentrant checkpointing runs training forwards that way, and they must record their auxiliary terms."""
        return not torch.is_grad_enabled() and not self.training and not is_sharded(self.lora_A_dict[adapter_name])

    def adapter_weights(self, adapter_name: str, *dict_names: str) -> tuple[torch.Tensor, ...]:
        """The weights of this adapter's modules in the dicts ``dict_names``, read from the module tables directly:
        generation asks for them on every token, and nn.Module's attribute lookup was a tenth of a small layer's
        cost there. Inference path only (full weights, no sharding engine)."""
        return tuple(self._modules[name]._modules[adapter_name]._parameters["weight"] for name in dict_names)

    def inference_weight(self, adapter_name: str, what: str, sources: tuple[torch.Tensor, ...], build) -> torch.Tensor:
        """``build(*sources)`` for no-grad forwards (generation, evaluation), rebuilt only when a source or the
        scaling changed: a tensor's ``_version`` counts its in-place updates (torch optimizers, load_state_dict), its
        data_ptr, dtype and device change when it is replaced or moved, and ``train()`` / ``eval()`` empty the cache
        (below). Kept out of the state dict. Under ``torch.compile`` it is built in the graph instead: the cache's
        version and pointer checks would split the graph and recompile it per layer."""
        if torch.compiler.is_compiling():
            return build(*sources)
        key = (self.scaling[adapter_name], *((t._version, t.data_ptr(), t.dtype, t.device) for t in sources))
        cached = self.inference_cache.get((adapter_name, what))
        if cached is None or cached[0] != key:
            cached = self.inference_cache[(adapter_name, what)] = (key, build(*sources))
        return cached[1]

    def train(self, mode: bool = True):
        # Some optimizers write weights without bumping ``_version`` (bitsandbytes' 8-bit and paged AdamW, what QLoRA
        # recipes use; DeepSpeed ZeRO-1/2 copying through ``.data``), so the cache is also dropped on every mode
        # switch: the Trainer calls train() before each step and eval() before evaluating.
        self.inference_cache.clear()
        return super().train(mode)

    def _adapter_output(self, adapter_name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """Return the layer output after applying adapter ``adapter_name`` to input x and current output."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter_names = kwargs.pop("adapter_names", None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        for name in self.active_adapters:
            if name in self.lora_A_dict:
                result = self._adapter_output(name, x, result)
        return result

    def _mixed_batch_forward(self, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any) -> torch.Tensor:
        """PEFT's mixed-adapter batch: row i gets adapter ``adapter_names[i]`` (``"__base__"``: none). One pass per
        adapter present, over its rows (what a server batching requests for several adapters needs)."""
        if len(adapter_names) != x.shape[0]:
            raise ValueError(f"adapter_names has {len(adapter_names)} names for a batch of {x.shape[0]} rows; name "
                             "one adapter (or \"__base__\") per row")
        if self.merged:
            raise ValueError("adapter_names cannot be used while adapters are merged; unmerge them first")
        result = self.base_layer(x, *args, **kwargs)
        rows_of: dict[str, list[int]] = {}
        for row, name in enumerate(adapter_names):
            rows_of.setdefault(name, []).append(row)
        if len(rows_of) == 1 and adapter_names[0] in self.lora_A_dict:  # one adapter for every row: no gather
            return self._adapter_output(adapter_names[0], x, result)
        for name, rows in rows_of.items():
            if name in self.lora_A_dict:  # "__base__", and adapters that do not target this layer, keep W x
                index = torch.tensor(rows, device=x.device)
                result = result.index_copy(0, index, self._adapter_output(name, x[index], result[index]))
        return result

    # ---- auxiliary losses and telemetry ----------------------------------------------------------------------
    def record_aux_loss(self, adapter_name: str, term: str, loss: torch.Tensor) -> None:
        """Keep an auxiliary term of this (training) forward. It is computed inside the forward, where sharding
        engines have the weights in full, and handed out once by ``aux_losses``."""
        if torch._C._current_graph_task_id() != -1:
            return  # a gradient-checkpoint recompute inside backward: this step's forward already recorded the term
        pending = self.pending_aux.setdefault(adapter_name, {})
        if loss.requires_grad and getattr(pending.get(term), "requires_grad", False):
            warnings.warn(UnappliedAuxLoss(term), stacklevel=2)  # the last one was never handed out
        pending[term] = loss
        self.last_aux.setdefault(adapter_name, {})[term] = loss.detach()

    def aux_losses(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """Unweighted auxiliary terms of one adapter from the last training forward, by name, each returned once.

        The weights come from the adapter's config (``LowRankConfig.aux_loss_weights``); ``plugin.auxiliary`` sums
        both over layers for the trainer.
        """
        return self.pending_aux.pop(adapter_name, {})

    # ---- merging -------------------------------------------------------------------------------------------
    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        raise ValueError(self.not_mergeable_reason)

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        if not self.mergeable:
            raise ValueError(self.not_mergeable_reason)
        base = self.get_base_layer()
        if is_quantized(base):
            raise ValueError(
                "merging into a quantized (bitsandbytes) layer is not supported: load the base model in "
                "float32/bf16 (no load_in_4bit/load_in_8bit), load the adapter, then merge"
            )
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self.lora_A_dict:
                continue
            delta = self.get_delta_weight(name)
            weight = self.adapted_weight()
            if safe_merge:
                merged = weight.data + delta
                if not torch.isfinite(merged).all():
                    # PEFT's tuners' wording, verbatim: tools and tests match on it
                    raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
                weight.data = merged
            else:
                weight.data += delta
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.lora_A_dict:
                self.adapted_weight().data -= self.get_delta_weight(name)

    def __repr__(self) -> str:
        return self.prefix.rstrip("_") + "." + super().__repr__()


def _warn_untouched_experts(model: nn.Module) -> None:
    """transformers 5 keeps routed MoE experts (Mixtral, Qwen2/3-MoE, gpt-oss) as 3D tensors, not Linear layers:
    ``target_modules: [gate_proj, up_proj, down_proj]`` then adapts only the shared or dense MLPs. Said once."""
    adapted = {id(module.adapted_weight()) for module in model.modules() if hasattr(module, "parameter_name")}
    experts = [name.replace(".base_layer", "") for name, p in model.named_parameters()
               if p.ndim == 3 and "expert" in name.lower() and id(p) not in adapted]
    if experts:
        warnings.warn(f"{len(experts)} routed-expert weight tensors (e.g. {experts[0]}) are 3D parameters, not "
                      "Linear layers, and stay unadapted by target_modules; the attention and any dense MLP layers are "
                      "adapted. Adapt the experts with target_parameters (e.g. [mlp.experts.gate_up_proj, "
                      "mlp.experts.down_proj]): MPLoRA and PEFT's LoRA take it",
                      stacklevel=3)


class LowRankModel(BaseTuner):
    """Tuner model shared by the three methods: wraps every targeted linear layer in ``tuner_layer_cls``."""

    tuner_layer_cls: type[LowRankLayer]
    # the layer that adapts a raw parameter (target_parameters), where the method's update is a weight delta
    param_wrapper_cls: type[LowRankLayer] | None = None

    @contextlib.contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """``model(..., adapter_names=[...])`` and ``generate(..., adapter_names=[...])``, as for PEFT's LoRA: each
        row's adapter is handed to every adapter layer (and modules_to_save wrapper) for this call."""
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            raise ValueError("Cannot pass `adapter_names` when the model is in training mode.")  # LoRA's wording
        known = {name for layer in self.modules() if isinstance(layer, LowRankLayer) for name in layer.lora_A_dict}
        unknown = sorted({name for name in adapter_names if name != "__base__"} - known)
        if unknown:
            raise ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(unknown)}")
        num_beams = kwargs.get("num_beams")
        if isinstance(num_beams, int) and num_beams > 1:  # generate repeats each row once per beam
            adapter_names = [name for name in adapter_names for _ in range(num_beams)]
        hook = functools.partial(inject_adapter_names, adapter_names=adapter_names)
        handles = [module.register_forward_pre_hook(hook, with_kwargs=True) for module in self.modules()
                   if isinstance(module, (LowRankLayer, AuxiliaryTrainingWrapper))]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def inject_adapter(self, model, adapter_name, *args, **kwargs):
        super().inject_adapter(model, adapter_name, *args, **kwargs)
        config = self.peft_config[adapter_name]
        for name in ("rank_pattern", "alpha_pattern"):
            unmatched = [key for key in getattr(config, name)
                         if not any(re.match(rf"(.*\.)?({key})$", module) for module in self.targeted_module_names)]
            if unmatched:
                raise ValueError(f"{name} key {unmatched[0]!r} matches no adapted layer (adapted: e.g. "
                                 f"{self.targeted_module_names[0]}); fix the key or target that layer")
        _warn_untouched_experts(model)

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, *,
                            parameter_name=None):
        r_key = get_pattern_key(config.rank_pattern.keys(), current_key)
        alpha_key = get_pattern_key(config.alpha_pattern.keys(), current_key)
        if r_key in config.rank_pattern or alpha_key in config.alpha_pattern:  # this layer's own r / alpha
            config = copy.copy(config)
            config.r = config.rank_pattern.get(r_key, config.r)
            config.lora_alpha = config.alpha_pattern.get(alpha_key, config.lora_alpha)
        if parameter_name is not None:  # target_parameters (the configs of methods without a wrapper refuse it)
            if getattr(target, "parameter_name", None) == parameter_name:
                target.update_layer(adapter_name, config)
                return
            new_module = self.param_wrapper_cls(target, adapter_name, config, parameter_name=parameter_name)
        elif isinstance(target, self.tuner_layer_cls):
            target.update_layer(adapter_name, config)
            return
        else:
            new_module = self._new_layer(config, adapter_name, target)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added adapter is not trainable until set_adapter
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent, child_name, new_module, child) -> None:
        if hasattr(child, "parameter_name") and not isinstance(new_module, BaseTunerLayer):
            setattr(parent, child_name, new_module)  # unloading a parameter wrapper: the module it wrapped, as it is
            return
        super()._replace_module(parent, child_name, new_module, child)

    def _new_layer(self, config, adapter_name, target) -> LowRankLayer:
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        in_out_features(base)  # raises a clear TypeError for unsupported layers
        if isinstance(base, Conv1D) and not config.fan_in_fan_out:  # as PEFT's LoRA does, in its words
            warnings.warn("fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out "
                          "to True.")
            config.fan_in_fan_out = True
        return self.tuner_layer_cls(target, adapter_name, config, fan_in_fan_out=config.fan_in_fan_out)

    @classmethod
    def current_key(cls, key: str) -> str:
        """A saved adapter's key as this release names it: 0.1.0 stored some weights as bare parameters (MoR's
        Omegas, LoRATRF's task vector), now they are their modules' ``weight``."""
        return f"{key}.weight" if key.rsplit(".", 1)[-1] in cls.tuner_layer_cls.legacy_parameter_dicts else key

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        return super()._remap_adapter_state_dict_for_load(
            model, config, adapter_name, {cls.current_key(k): v for k, v in state_dict.items()})

    def add_weighted_adapter(self, *args, **kwargs) -> None:
        raise ValueError(f"add_weighted_adapter is not available for {type(self).__name__.removesuffix('Model')}: "
                         f"{self.tuner_layer_cls.not_mergeable_reason.split(': ')[-1].split(';')[0]}, so adapters "
                         "cannot be combined into one weight update; route each request to its adapter instead "
                         "(adapter_names, plugin.serve)")

    def _check_merge_allowed(self):
        if not self.tuner_layer_cls.mergeable:
            raise ValueError(self.tuner_layer_cls.not_mergeable_reason)
        super()._check_merge_allowed()
