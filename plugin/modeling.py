"""Base model, tokenizer and PEFT config from a TrainConfig (4-bit / 8-bit backbones included)."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig
from torch import nn

from . import chat_templates
from .config import EMBEDDED_ENCODER, EMBEDDED_MODEL, TrainConfig
from .errors import UserError, first_line
from .tuners import METHODS
from .tuners.base import in_out_features

def resolve_model_path(name: str) -> str:
    """A folder for the embedded models' names (made once in the cache), else ``name`` itself."""
    from . import embedded

    folder = {EMBEDDED_MODEL: embedded.embedded_model_path, EMBEDDED_ENCODER: embedded.embedded_encoder_path}.get(name)
    return folder() if folder else name


def _load_error(what: str, name: str, err: Exception) -> UserError:
    where = "no such local folder, and the hub is unreachable or has no such repo" if not Path(name).exists() else first_line(err)
    return UserError(f"cannot load {what} '{name}': {where}")


def load_tokenizer(name: str, chat_template: str | None = None, chat_template_jinja: str | None = None,
                   trust_remote_code: bool = False, special_tokens: dict[str, str] | None = None):
    """The tokenizer, with ``chat_template`` (a name or Jinja text, see ``chat_templates``) if given."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _load_error("tokenizer", name, err) from None
    set_special_tokens(tokenizer, special_tokens)
    template = chat_templates.resolve(chat_template, chat_template_jinja)
    if template is not None:
        tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_for(cfg: TrainConfig):
    """The tokenizer a training config describes (training and --preview-data must see the same one)."""
    return load_tokenizer(cfg.tokenizer or cfg.base_model, cfg.chat_template, cfg.chat_template_jinja,
                          cfg.trust_remote_code, cfg.special_tokens)


def set_special_tokens(tokenizer, tokens: dict[str, str] | None) -> None:
    """Axolotl's special_tokens: name tokens (pad, eos, ...) that the vocabulary already has. A new token would need
    trained embeddings, which an adapter run does not train."""
    for name, token in (tokens or {}).items():
        if token not in tokenizer.get_vocab():
            raise UserError(f"special_tokens: {name} {token!r} is not in the tokenizer's vocabulary; pick a token it "
                            "has (adding tokens needs trained embeddings, which adapter training leaves frozen)")
        try:
            setattr(tokenizer, name, token)
        except (AttributeError, ValueError):
            raise UserError(f"special_tokens: unknown token role '{name}'; use pad_token, eos_token, bos_token, "
                            "unk_token") from None


def _attention(name: str | None) -> str | None:
    """flash_attention_2 needs its package and a GPU; elsewhere sdpa computes the same attention."""
    if name != "flash_attention_2":
        return name
    import importlib.util

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn"):
        return name
    print("note: attn_implementation flash_attention_2 needs the flash-attn package and a GPU; using sdpa, which "
          "computes the same attention", file=sys.stderr)
    return "sdpa"


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, compute_dtype: torch.dtype):
    if not (load_in_4bit or load_in_8bit):
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise UserError("load_in_4bit/load_in_8bit need bitsandbytes: pip install bitsandbytes") from None
    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        # packed 4-bit weights stored as compute-dtype elements (same bytes): FSDP and ZeRO-3 cannot shard uint8
        bnb_4bit_quant_storage=compute_dtype,
    )


def fsdp_launched() -> bool:
    """``accelerate launch`` with an FSDP config (it exports ACCELERATE_USE_FSDP to every process)."""
    from accelerate.utils import str_to_bool

    return bool(str_to_bool(os.environ.get("ACCELERATE_USE_FSDP", "false")))


def _refuse_prequantised(name: str, trust_remote_code: bool) -> None:
    """AWQ/GPTQ/AQLM/... checkpoints hold packed integer kernels that our layers cannot wrap (bitsandbytes ones can)."""
    from transformers import AutoConfig

    quant = getattr(AutoConfig.from_pretrained(resolve_model_path(name), trust_remote_code=trust_remote_code),
                    "quantization_config", None)
    method = (quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None))
    if method is not None and str(method).lower().rsplit(".", 1)[-1] != "bitsandbytes":
        raise UserError(f"base_model {name} is pre-quantised with {method}: MPLoRA, MoR and LoRATRF layers cannot wrap "
                        "its kernels; use the full-precision base with load_in_4bit: true")


def load_base_model(name: str, *, load_in_4bit=False, load_in_8bit=False, bf16=False, gradient_checkpointing=False,
                    trust_remote_code=False, attn_implementation=None, num_labels=None):
    """Load a causal LM (or, with ``num_labels``, a sequence classifier with a new head); quantized backbones get
    PEFT's k-bit training preparation."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    dtype = torch.bfloat16 if bf16 else torch.float32
    quant = quantization_config(load_in_4bit, load_in_8bit, dtype)
    try:
        _refuse_prequantised(name, trust_remote_code)
        head = {} if num_labels is None else {"num_labels": num_labels}
        auto = AutoModelForCausalLM if num_labels is None else AutoModelForSequenceClassification
        model = auto.from_pretrained(resolve_model_path(name), dtype=dtype, quantization_config=quant,
                                     trust_remote_code=trust_remote_code,
                                     attn_implementation=_attention(attn_implementation), **head)
    except (OSError, ValueError) as err:
        raise _load_error("base_model", name, err) from None
    if quant is not None and not fsdp_launched():
        # not under FSDP (QLoRA-FSDP recipe): the upcast of norms and embeddings to float32 would give FSDP units
        # mixed dtypes; the Trainer enables checkpointing there
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    return model


def linear_layer_names(model: nn.Module) -> set[str]:
    """Short names (last path component) of every layer an adapter can wrap."""
    names = set()
    for full_name, module in model.named_modules():
        try:
            in_out_features(module)
        except TypeError:
            continue
        names.add(full_name.rsplit(".", 1)[-1])
    return names


def check_modules_to_save(model: nn.Module, names: list[str] | None) -> None:
    """PEFT silently ignores a modules_to_save entry that names nothing: the user expects that module trained."""
    module_names = [n for n, _ in model.named_modules()]
    for name in names or []:
        if not any(n == name or n.endswith("." + name) for n in module_names):
            tops = sorted({n.rsplit(".", 1)[-1] for n in module_names if n and "layers" not in n})
            raise UserError(f"lora_modules_to_save: '{name}' matches no module of this model; e.g. {', '.join(tops[:8])}")


def check_target_modules(model: nn.Module, targets: list[str] | None) -> None:
    if not targets:
        return
    module_names = [n for n, _ in model.named_modules()]
    adaptable = linear_layer_names(model)
    for target in targets:
        if target in ("all-linear", "all_linear"):
            continue
        matches = [n for n in module_names if n == target or n.endswith("." + target) or re.fullmatch(target, n)]
        if not matches:
            raise UserError(
                f"lora_target_modules: '{target}' matches no layer of this model; "
                f"its linear layers are: {', '.join(sorted(adaptable))}"
            )
        bad = [n for n in matches if n.rsplit(".", 1)[-1] not in adaptable]
        if bad:
            raise UserError(f"lora_target_modules: '{target}' matches {bad[0]}, which is not a linear layer")


def peft_config_from_keys(keys: dict) -> PeftConfig:
    """The adapter's PEFT config from YAML keys (ours or Axolotl's: same names); missing or None keys take
    the schema defaults. ``adapter: lora`` gives a ``peft.LoraConfig``."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

    def get(name):
        value = keys.get(name)
        return defaults[name] if value is None else value

    targets = get("lora_target_modules")
    if keys.get("lora_target_linear") or targets in (["all-linear"], ["all"], ["all_linear"]):
        targets = "all-linear"  # PEFT's own shorthand: every linear layer but the output head
    common = dict(
        r=get("lora_r"),
        lora_alpha=get("lora_alpha"),
        lora_dropout=get("lora_dropout"),
        target_modules=targets,
        modules_to_save=get("lora_modules_to_save"),
        use_rslora=get("peft_use_rslora"),
        # SEQ_CLS: PEFT trains and saves the new classifier head too (modules_to_save classifier / score)
        task_type="SEQ_CLS" if keys.get("task") == "sequence_classification" else "CAUSAL_LM",
    )
    adapter = get("adapter")
    if adapter == "lora":
        return LoraConfig(**{**common, "target_modules": common["target_modules"] or "all-linear"})
    method_fields = {
        "mplora": dict(num_paths=get("mplora_num_paths"), orth_weight=get("mplora_orth_weight"),
                       orth_start_step=get("mplora_orth_start_step")),
        "mor": dict(num_experts=get("mor_num_experts"), router_aux_loss_coef=get("mor_router_aux_loss_coef"),
                    router_init_std=get("mor_router_init_std")),
        "loratrf": dict(trf_rank=get("loratrf_rank"), trf_mode=get("loratrf_mode"),
                        trf_task_vector_init=get("loratrf_task_vector_init")),
    }[adapter]
    config_cls, _ = METHODS[adapter]
    try:
        return config_cls(**common, **method_fields)
    except ValueError as err:
        raise UserError(str(err)) from None


def build_peft_config(cfg: TrainConfig) -> PeftConfig:
    return peft_config_from_keys(dataclasses.asdict(cfg))
