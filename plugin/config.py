"""The training YAML: one schema, Axolotl key names, LLaMA-Factory aliases, validated before anything loads."""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from . import chat_templates, peer_keys
from .errors import UserError

ADAPTERS = ("lora", "mplora", "mor", "loratrf")
# our chat roles and the names data uses for them (Axolotl's defaults); a dataset's own ``roles:`` replaces them
DEFAULT_ROLES = {
    "system": ["system"],
    "user": ["user", "human"],
    "assistant": ["assistant", "gpt", "model", "function_call"],  # LLaMA-Factory trains function calls
    "tool": ["tool", "observation", "function_response", "ipython"],
}
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
EMBEDDED_ENCODER = "embedded:all-minilm-l6-v2"  # task: sequence_classification's default base
TEXT_TYPES = ("text", "completion")  # dataset types trained as plain text


@dataclass
class DatasetSpec:
    """One entry of ``datasets:``."""

    path: str
    # messages = chat_template (Axolotl's name): OpenAI {role, content} chats; sharegpt: {from, value} chats
    # text = completion (Axolotl's name): plain text, every token trained
    type: Literal["messages", "chat_template", "sharegpt", "alpaca", "text", "completion"] = "messages"
    split: str = "train"
    name: Optional[str] = None  # hub dataset config name
    field_messages: Optional[str] = None  # column holding the chat; default messages (conversations for sharegpt)
    message_property_mappings: Optional[dict[str, str]] = None  # e.g. {role: from, content: value}
    roles: Optional[dict[str, list[str]]] = None  # our role -> the data's names, e.g. {assistant: [gpt, bot]}
    roles_to_train: list[str] = field(default_factory=lambda: ["assistant"])
    train_on_eos: Literal["turn", "last", "all", "none"] = "turn"  # which end-of-turn tokens are trained
    # alpaca columns (Axolotl's names); history: earlier [prompt, answer] pairs, trained too (LLaMA-Factory)
    field_instruction: str = "instruction"
    field_input: str = "input"
    field_output: str = "output"
    field_system: Optional[str] = None
    field_history: Optional[str] = None
    drop_system_message: bool = False  # chats: leave out a leading system turn (Axolotl's key)
    field: str = "text"  # the text column of a text / completion dataset (Axolotl's key)
    max_samples: Optional[int] = None


@dataclass
class EvalSpec:
    """The ``eval:`` section: runs the eval bridge on the trained adapter after training."""

    suite: Optional[str] = None
    tasks: Optional[list[str]] = None
    limit: Optional[int] = None
    batch_size: int = 8
    num_fewshot: Optional[int] = None
    data_dir: Optional[str] = None
    apply_chat_template: bool = False  # prompts in the chat format a chat-trained adapter saw
    output: Optional[str] = None  # default: <output_dir>/eval


@dataclass
class TrainConfig:
    # what is trained: a causal LM on text/chats, or a classifier (transformers' AutoModelForSequenceClassification)
    # on GLUE-style rows (sentence1 + sentence2, or sentence / text, and label)
    task: Literal["causal_lm", "sequence_classification"] = "causal_lm"
    num_labels: Optional[int] = None  # sequence_classification: classes; 1 = regression (scored by Pearson)
    # model (sequence_classification defaults to the embedded encoder, embedded:all-minilm-l6-v2)
    base_model: str = EMBEDDED_MODEL
    tokenizer: Optional[str] = None
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    trust_remote_code: bool = False  # run the model repo's own code (as transformers' flag)
    attn_implementation: Optional[str] = None  # transformers' name: eager, sdpa, flash_attention_2, ...
    eot_tokens: Optional[list[str]] = None  # tokens that close a chat turn (Axolotl's key); default: common ones
    special_tokens: Optional[dict[str, str]] = None  # e.g. {pad_token: "<|end_of_text|>"}: tokens already in the vocabulary
    chat_template: Optional[str] = None  # None: the tokenizer's own; a name (chatml, llama3, qwen3, ...) or Jinja text
    chat_template_jinja: Optional[str] = None  # the Jinja text for chat_template: jinja (Axolotl)
    # adapter (shared with peft.LoraConfig)
    adapter: Literal["lora", "mplora", "mor", "loratrf", "full"] = "lora"  # full: every weight (classification only)
    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    lora_target_modules: Optional[list[str]] = None  # None: the method's paper defaults; all-linear: every linear
    lora_target_linear: bool = False  # Axolotl: adapt every linear layer (= lora_target_modules: all-linear)
    lora_modules_to_save: Optional[list[str]] = None
    peft_use_rslora: bool = False
    # method fields (docs/methods.md); their help text is the Axolotl plugin's field descriptions too
    mplora_num_paths: int = field(default=4, metadata={"help": "MPLoRA: number of paths n"})
    mplora_orth_weight: float = field(default=0.1, metadata={"help": "MPLoRA: orthogonality loss weight (lambda)"})
    mplora_orth_start_step: int = field(default=0, metadata={"help": "MPLoRA: first step of the orthogonality loss"})
    mor_num_experts: int = field(default=8, metadata={"help": "MoR: number of experts N"})
    mor_router_aux_loss_coef: float = field(default=0.0, metadata={"help": "MoR: router balance loss weight"})
    mor_router_init_std: float = field(default=0.02, metadata={"help": "MoR: router init std"})
    loratrf_rank: Optional[int] = field(default=None, metadata={"help": "LoRATRF: transform rank k (default r)"})
    loratrf_mode: Literal["output", "input"] = field(default="output", metadata={"help": "LoRATRF: filter mode"})
    loratrf_task_vector_init: Literal["random", "input_mean"] = field(
        default="random", metadata={"help": "LoRATRF: task vector init (random: the paper; input_mean: mean of the "
                                            "first batch's gate inputs)"})
    # data
    datasets: list[DatasetSpec] = field(default_factory=list)
    test_datasets: list[DatasetSpec] = field(default_factory=list)  # held-out data scored during/after training (Axolotl)
    val_set_size: float = 0.0  # fraction (< 1) or number of rows held out for eval loss
    sequence_len: int = 1024
    sample_packing: bool = False
    train_on_inputs: bool = False  # False: loss on the roles_to_train turns only; true: on every token
    max_samples: Optional[int] = None  # LLaMA-Factory: rows taken from each dataset without its own max_samples
    dataset_exact_deduplication: bool = False  # identical prepared rows kept once (Axolotl's key)
    dataset_processes: Optional[int] = None  # processes tokenising the data; default: all cores for >= 20k rows
    # optimisation
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    num_epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    cosine_min_lr_ratio: Optional[float] = None  # cosine decays to this fraction of learning_rate (Axolotl's key)
    warmup_ratio: float = 0.0
    warmup_steps: Optional[int] = None  # warmup as a number of steps (instead of warmup_ratio)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optimizer: str = "adamw_torch"
    bf16: Union[bool, Literal["auto"]] = False
    fp16: bool = False  # float16 mixed precision (GPUs without bf16)
    group_by_length: bool = False  # batches of similar lengths (less padding; changes the batch order)
    curriculum_sampling: bool = False  # rows in dataset order, not shuffled (Axolotl's key)
    gradient_checkpointing: Union[bool, Literal["offload"]] = False  # offload: also keep saved activations on CPU
    seed: int = 42
    # outputs
    output_dir: str = "outputs/run"
    overwrite_output_dir: bool = False
    resume_from_checkpoint: Optional[str] = "auto"  # "auto": continue from the newest checkpoint if there is one
    save_steps: int = 100
    saves_per_epoch: Optional[int] = None  # Axolotl: save N times per epoch instead of every save_steps
    eval_steps: Optional[int] = None  # held-out loss every N steps (default: save_steps), when val_set_size > 0
    evals_per_epoch: Optional[int] = None  # Axolotl: evaluate N times per epoch instead
    eval_strategy: Optional[Literal["steps", "epoch", "no"]] = None
    eval_batch_size: Optional[int] = None  # default: micro_batch_size
    save_total_limit: Optional[int] = None
    logging_steps: int = 10
    report_to: str = "none"
    eval: Optional[EvalSpec] = None


# LLaMA-Factory (and older Axolotl) names -> our canonical names
ALIASES = {
    "model_name_or_path": "base_model",
    "lora_rank": "lora_r",
    "lora_target": "lora_target_modules",
    "target_modules": "lora_target_modules",
    "additional_target": "lora_modules_to_save",
    "use_rslora": "peft_use_rslora",
    "finetuning_type": "adapter",
    "cutoff_len": "sequence_len",
    "max_seq_length": "sequence_len",
    "per_device_train_batch_size": "micro_batch_size",
    "num_train_epochs": "num_epochs",
    "lr_scheduler_type": "lr_scheduler",
    "adam_eps": "adam_epsilon",
    "val_size": "val_set_size",
    "packing": "sample_packing",
    "template": "chat_template",
    "optim": "optimizer",
    "overwrite_output": "overwrite_output_dir",
    "preprocessing_num_workers": "dataset_processes",
    "dataset_num_proc": "dataset_processes",
    "per_device_eval_batch_size": "eval_batch_size",
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _suggest(key: str, known: list[str]) -> str:
    close = [c for c in difflib.get_close_matches(key, known, n=3, cutoff=0.6) if peer_keys.hint_allowed(key, c)]
    return f"; did you mean '{close[0]}'?" if close else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where YAML is loose (e.g. 2e-4 parsed as str)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError:
                continue
        raise UserError(f"{where} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise UserError(f"{where} must be {_type_name(tp)}, got {value!r}{_suggest(str(value), [str(a) for a in typing.get_args(tp)])}")
        return value
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}")
        return {_coerce(k, key_tp, where): _coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:  # LLaMA-Factory style "q_proj,v_proj"
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise UserError(f"{where} must be {_type_name(tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and tp is DatasetSpec:
            value = {"path": value}
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{where} must be a string, got {value!r}")
    raise TypeError(f"unhandled annotation {tp}")


def _build(cls: type, raw: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        key = str(key)
        label = f"{where}.{key}" if where else key
        if key not in hints and not where and key in peer_keys.IGNORED:  # another tool's top-level key
            continue
        if key not in hints:
            raise UserError(f"unknown key '{label}'{_suggest(key, names)}")
        kwargs[key] = _coerce(value, hints[key], label)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in kwargs]
    if missing:
        raise UserError(f"{where or 'config'} is missing required key '{missing[0]}'")
    return cls(**kwargs)


def _takes_none(key: str) -> bool:
    """Keys of ours whose type allows null (null then has a meaning, e.g. resume_from_checkpoint: null = don't)."""
    hint = typing.get_type_hints(TrainConfig).get(key)
    return hint is not None and type(None) in typing.get_args(hint)


def _canonical_keys(raw: dict) -> dict:
    refused = [key for key, value in raw.items() if key in peer_keys.REFUSED and value is not None]
    if refused:  # the real reason first: an rl: dpo file also carries keys only DPO knows
        raise UserError(f"{refused[0]}: {peer_keys.REFUSED[refused[0]]}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None and not _takes_none(ALIASES.get(key, key)):
            continue  # upstream files leave unused keys empty (lora_model_dir:, lora_r:): empty means absent
        if key == "gradient_checkpointing_kwargs" and isinstance(value, dict) and value.get("use_reentrant"):
            raise UserError(peer_keys.REENTRANT_REFUSED)
        if key in peer_keys.REFUSED_WHEN_ON:
            if value:
                raise UserError(f"{key}: {value}: {peer_keys.REFUSED_WHEN_ON[key]}")
            continue  # switched off: changes nothing
        if key == "adapter" and value == "qlora":  # Axolotl: LoRA on a 4-bit base
            if raw.get("load_in_8bit"):
                raise UserError("adapter: qlora means a 4-bit base, but load_in_8bit is true; drop one")
            out["load_in_4bit"] = True
            value = "lora"
        if key == "quantization_bit":  # LLaMA-Factory
            if value not in (4, 8):
                raise UserError(f"quantization_bit must be 4 or 8, got {value!r}")
            key, value = f"load_in_{value}bit", True
        elif key == "stage":  # LLaMA-Factory: sft, or pt = plain-text training (its datasets read as text)
            if value not in ("sft", "pt"):
                raise UserError(f"stage: {value}: only supervised fine-tuning (sft) and plain-text training (pt) "
                                "run here; preference and reward stages are not supported")
        elif key == "do_train":  # LLaMA-Factory
            if value is True:
                continue
            raise UserError("do_train: false: plugin.train always trains; evaluate a saved adapter with "
                            "python -m plugin.eval --adapter DIR")
        elif key == "quantization_method":  # LLaMA-Factory; bitsandbytes is what load_in_4bit/8bit use
            if value == "bnb":
                continue
            raise UserError(f"quantization_method: {value}: only bnb (bitsandbytes) quantisation is supported")
        key = ALIASES.get(key, key)
        if key in out and out[key] != value:
            raise UserError(f"'{key}' is given twice (directly and through an alias); keep one")
        out[key] = value
    return out


def _check_values(cfg: TrainConfig, explicit_keys: list[str]) -> None:
    if cfg.cosine_min_lr_ratio is not None and (cfg.lr_scheduler != "cosine" or not 0 <= cfg.cosine_min_lr_ratio <= 1):
        raise UserError(f"cosine_min_lr_ratio: {cfg.cosine_min_lr_ratio} needs lr_scheduler: cosine and a value in "
                        f"[0, 1] (lr_scheduler is {cfg.lr_scheduler})")
    if cfg.curriculum_sampling and cfg.group_by_length:
        raise UserError("curriculum_sampling (dataset order) and group_by_length (batches by length) both set the "
                        "row order; keep one")
    for name in ("saves_per_epoch", "eval_steps", "evals_per_epoch", "eval_batch_size"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be > 0, got {getattr(cfg, name)}")
    positive = ["lora_r", "micro_batch_size", "gradient_accumulation_steps", "sequence_len", "save_steps",
                "logging_steps", "mplora_num_paths", "mor_num_experts"]
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be > 0, got {getattr(cfg, name)}")
    if cfg.loratrf_rank is not None and cfg.loratrf_rank <= 0:
        raise UserError(f"loratrf_rank must be > 0, got {cfg.loratrf_rank}")
    if not 0 <= cfg.lora_dropout < 1:
        raise UserError(f"lora_dropout must be in [0, 1), got {cfg.lora_dropout}")
    if cfg.learning_rate <= 0:
        raise UserError(f"learning_rate must be > 0, got {cfg.learning_rate}")
    if not 0 <= cfg.warmup_ratio < 1:
        raise UserError(f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.warmup_steps is not None and (cfg.warmup_steps < 0 or cfg.warmup_ratio):
        raise UserError(f"warmup_steps must be >= 0 and not combined with warmup_ratio (got {cfg.warmup_steps} and "
                        f"{cfg.warmup_ratio}); keep one")
    if cfg.fp16 and cfg.bf16 is True:
        raise UserError("bf16 and fp16 are both true; pick one")
    if cfg.load_in_4bit and cfg.load_in_8bit:
        raise UserError("load_in_4bit and load_in_8bit are both true; pick one")
    if cfg.max_steps <= 0 and cfg.num_epochs <= 0:
        raise UserError("set max_steps > 0 or num_epochs > 0")
    if cfg.val_set_size < 0:
        raise UserError(f"val_set_size must be >= 0, got {cfg.val_set_size}")
    if not cfg.datasets:
        raise UserError("no datasets: add a 'datasets:' list, e.g. [{path: data/demo/chat.jsonl, type: messages}]")
    if cfg.test_datasets and cfg.val_set_size:
        raise UserError("test_datasets and val_set_size both choose the held-out rows; keep one")
    _check_task(cfg, explicit_keys)
    chat_templates.check_name(cfg.chat_template, cfg.chat_template_jinja)
    if cfg.lora_target_linear or cfg.lora_target_modules in (["all"], ["all_linear"]):  # Axolotl / LLaMA-Factory
        cfg.lora_target_modules = ["all-linear"]
    for number, spec in enumerate(cfg.datasets):
        if spec.max_samples is None:
            spec.max_samples = cfg.max_samples
        known = list(spec.roles or DEFAULT_ROLES)
        unknown = [r for r in spec.roles_to_train if r not in known]
        if unknown:
            raise UserError(f"datasets[{number}].roles_to_train names unknown role '{unknown[0]}'; roles: {', '.join(known)}")
    if cfg.dataset_processes is not None and cfg.dataset_processes <= 0:
        raise UserError(f"dataset_processes must be > 0, got {cfg.dataset_processes}")
    for prefix in METHOD_PREFIXES:
        stray = [k for k in explicit_keys if k.startswith(prefix)]
        if stray and cfg.adapter != prefix[:-1]:
            raise UserError(f"{stray[0]} is set but adapter is '{cfg.adapter}'; set adapter: {prefix[:-1]} or drop it")


def _check_task(cfg: TrainConfig, explicit_keys: list[str]) -> None:
    if cfg.task == "causal_lm":
        if cfg.adapter == "full":
            raise UserError("adapter: full (full fine-tuning, the ceiling of the GLUE study) runs with task: "
                            "sequence_classification only; pick an adapter (lora, mplora, mor, loratrf)")
        if cfg.num_labels is not None:
            raise UserError("num_labels is for task: sequence_classification; set task: sequence_classification or "
                            "drop num_labels")
        return
    if cfg.num_labels is None or cfg.num_labels < 1:
        raise UserError(f"task: sequence_classification needs num_labels >= 1 (the classes; 1 for a regression "
                        f"score), got {cfg.num_labels}")
    if "base_model" not in explicit_keys:
        cfg.base_model = EMBEDDED_ENCODER
    if cfg.sample_packing:
        raise UserError("sample_packing does not go with task: sequence_classification (one label per row); drop it")
    if cfg.eval is not None:
        raise UserError("the eval: section runs lm-eval, which scores causal LMs; with task: sequence_classification "
                        "the held-out metrics come from test_datasets (or val_set_size): drop eval:")


def parse_override(args: list[str]) -> dict:
    """``--lora_r 16 --adapter mor`` -> {"lora_r": 16, "adapter": "mor"} (values parsed as YAML scalars)."""
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"unexpected argument '{arg}'; overrides look like --lora_r 16")
        key, _, value = arg[2:].partition("=")
        if not _:
            if i + 1 >= len(args):
                raise UserError(f"override {arg} needs a value, e.g. {arg} 16")
            i += 1
            value = args[i]
        try:
            out[key.replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:  # not a YAML scalar (a Jinja template, say): the text itself
            out[key.replace("-", "_")] = value
        i += 1
    return out


def load_config(path: str | os.PathLike | None, overrides: dict | None = None) -> TrainConfig:
    """Read, alias, type-check and validate a training YAML (plus command-line overrides)."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise UserError(f"{p} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
        if not isinstance(raw, dict):
            raise UserError(f"{p} must hold a mapping of keys, got {type(raw).__name__}")
    raw = {**_canonical_keys(raw), **_canonical_keys(overrides or {})}
    if raw.get("dataset") is not None:  # LLaMA-Factory: names in dataset_dir/dataset_info.json
        if raw.get("datasets"):
            raise UserError("both dataset (LLaMA-Factory names) and datasets are set; keep one")
        from .llamafactory import registry_datasets

        raw["datasets"] = registry_datasets(raw.pop("dataset"), raw.pop("dataset_dir", None) or "data",
                                            as_text=raw.get("stage") == "pt")
    raw.pop("dataset_dir", None)
    plain_text = raw.pop("stage", "sft") == "pt"
    ignored = sorted(k for k in raw if k in peer_keys.IGNORED)
    if ignored:
        print(f"note: ignoring keys that do not change training here: {', '.join(ignored)}", file=sys.stderr)
    cfg = _build(TrainConfig, raw)
    _check_values(cfg, list(raw))
    chats = [d.path for d in cfg.datasets if d.type not in TEXT_TYPES]
    if plain_text and chats:
        raise UserError(f"stage: pt trains plain text, but dataset {chats[0]} is not type: text; set its type "
                        "to text (field: COLUMN) or use stage: sft")
    return cfg


METHOD_PREFIXES = ("mplora_", "mor_", "loratrf_")


def method_fields() -> list[dataclasses.Field]:
    """The method keys, declared once above: the Axolotl plugin's pydantic args are derived from them."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name.startswith(METHOD_PREFIXES)]


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
