"""Base model and tokenizer from a TrainConfig (4-bit / 8-bit backbones included)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ..config import chat_templates
from ..config.schema import EMBEDDED_ENCODER, EMBEDDED_MODEL, TrainConfig
from ..utils.errors import UserError, first_line


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


def resolve_bf16(bf16: bool | str) -> bool:
    """The ``bf16`` key's value: ``auto`` means bf16 where the GPU supports it."""
    if bf16 == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(bf16)


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
