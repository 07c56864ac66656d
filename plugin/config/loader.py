"""Loading a training YAML: aliases and other tools' keys resolved, every value type-checked against the schema,
the whole config validated before anything heavy loads; command-line overrides."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..tuners import METHODS
from . import chat_templates, peer_keys
from .method_keys import method_keys
from .peft_mapping import ALL_LINEAR, peft_config_from_keys
from .deepspeed_file import resolve_deepspeed
from .schema import (ALIASES, DEFAULT_ROLES, EMBEDDED_ENCODER, RL_TYPES, SFT_TYPES, TEXT_TYPES, DatasetSpec, TrainConfig,
                     TrlSpec, to_dict, yaml_fields)
from ..utils.errors import UserError
from ..utils.imports import import_object


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {type_name(typing.get_args(tp)[1])}"
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
        if len(args) == 2 and type(None) in args:  # Optional[X]: X's own message (a bad key inside a section)
            return _coerce(value, next(a for a in args if a is not type(None)), where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError:
                continue
        raise UserError(f"{where} must be {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise UserError(f"{where} must be {type_name(tp)}, got {value!r}{_suggest(str(value), [str(a) for a in typing.get_args(tp)])}")
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
            raise UserError(f"{where} must be {type_name(tp)}, got {value!r}")
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
    if tp is Any:  # the inside of a mapping handed on as it is (a DeepSpeed or FSDP config)
        return value
    raise TypeError(f"unhandled annotation {tp}")


def _build(cls: type, raw: dict, where: str = "", spelled: dict | None = None) -> Any:
    """``cls`` from a mapping; ``spelled``: our key -> the other tool's name the YAML used, for the messages."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in yaml_fields(cls)]
    derived = method_keys() if cls is TrainConfig else {}
    kwargs: dict[str, Any] = {"method_keys": {}} if derived else {}
    for key, value in raw.items():
        key = str(key)
        label = f"{where}.{key}" if where else f"{spelled[key]} ({key})" if key in (spelled or {}) else key
        if key not in names and not where and key in peer_keys.IGNORED:  # another tool's top-level key
            continue
        if key in derived:
            kwargs["method_keys"][key] = _coerce(value, derived[key].type, label)
            continue
        if cls is DatasetSpec and key not in names and _peer_dataset_key(key, value, label):
            continue
        if cls is DatasetSpec and key == "type" and is_transform(value):  # Axolotl's module.function: _check_rl
            kwargs[key] = value
            continue
        if cls is TrlSpec and _peer_trl_key(key, value, raw, label):
            continue
        if key not in names:
            raise UserError(f"unknown key '{label}'{_suggest(key, names + list(derived))}")
        kwargs[key] = _coerce(value, hints[key], label)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in kwargs]
    if missing:
        raise UserError(f"{where or 'config'} is missing required key '{missing[0]}'")
    return cls(**kwargs)


def _peer_dataset_key(key: str, value: Any, label: str) -> bool:
    """An Axolotl dataset key of another tool's: True when it is set aside (with a note), an error when refused."""
    if key in peer_keys.DATASET_REFUSED_WHEN_ON:
        if peer_keys.is_on(key, value):
            raise UserError(f"{label}: {value}: {peer_keys.DATASET_REFUSED_WHEN_ON[key]}")
        return True
    if key in peer_keys.DATASET_IGNORED:
        print(f"note: ignoring {label}: {peer_keys.DATASET_IGNORED[key]}", file=sys.stderr)
        return True
    return False


def is_transform(value: Any) -> bool:
    """A dataset type naming the user's own transform (Axolotl's ``module.function``), not one of our formats or a
    misspelt one of them (``chatml.intell`` is a typo, not a module)."""
    return isinstance(value, str) and value not in SFT_TYPES + RL_TYPES and \
        bool(re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", value)) and \
        value.split(".")[0] not in {t.split(".")[0] for t in RL_TYPES if "." in t}


def _peer_trl_key(key: str, value: Any, raw: dict, label: str) -> bool:
    """TRL's vLLM-generation keys in ``trl:``: refused with use_vllm, else set aside with a note."""
    if raw.get("use_vllm"):
        raise UserError(f"trl.use_vllm: {peer_keys.VLLM_GENERATION}")
    if key.startswith("vllm_"):
        print(f"note: ignoring {label}: it is read with use_vllm only", file=sys.stderr)
        return True
    return False


def _takes_none(key: str) -> bool:
    """Keys of ours whose type allows null (null then has a meaning, e.g. resume_from_checkpoint: null = don't)."""
    spec = method_keys().get(key)
    hint = spec.type if spec else typing.get_type_hints(TrainConfig).get(key)
    return hint is not None and type(None) in typing.get_args(hint)


def _translate(key: str, value: Any) -> tuple[str, Any]:
    ours, values = peer_keys.TRANSLATED[key]
    for theirs, mapped in values.items():
        if value == theirs and type(value) is type(theirs):
            return ours, mapped
    raise UserError(f"{key}: {value!r}: choose one of {', '.join(map(str, values))}")


def _canonical_keys(raw: dict, spelled: dict) -> dict:
    """Other tools' spellings to ours (``spelled`` records which: our key -> theirs), refused and switched-off keys
    handled, null values dropped."""
    refused = [key for key, value in raw.items() if key in peer_keys.REFUSED and value is not None]
    if refused:  # the real reason first: an rl: dpo file also carries keys only DPO knows
        raise UserError(f"{refused[0]}: {peer_keys.REFUSED[refused[0]]}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None and not _takes_none(ALIASES.get(key, key)):
            continue  # upstream files leave unused keys empty (lora_model_dir:, lora_r:): empty means absent
        if key == "gradient_checkpointing_kwargs" and isinstance(value, dict) and value.get("use_reentrant") or \
                key == "use_reentrant_gc" and value is True:
            print(peer_keys.REENTRANT_SWITCHED, file=sys.stderr)
        if key in peer_keys.REFUSED_WHEN_ON:
            if peer_keys.is_on(key, value):
                raise UserError(f"{key}: {value}: {peer_keys.REFUSED_WHEN_ON[key]}")
            continue  # switched off: changes nothing
        if key in peer_keys.TRANSLATED:
            key, value = _translate(key, value)
            if value is peer_keys.DROP:
                continue
        if key == "adapter" and value == "qlora":  # Axolotl: LoRA on a 4-bit base
            if raw.get("load_in_8bit"):
                raise UserError("adapter: qlora means a 4-bit base, but load_in_8bit is true; drop one")
            out["load_in_4bit"] = True
            value = "lora"
        if key == "quantization_bit":  # LLaMA-Factory
            if value not in (4, 8):
                raise UserError(f"quantization_bit must be 4 or 8, got {value!r}")
            key, value = f"load_in_{value}bit", True
        elif key == "stage":  # LLaMA-Factory: sft, pt = plain-text training (its datasets read as text), dpo, kto
            if value in ("dpo", "kto", "rm"):
                key, value = "rl", _llamafactory_rl(value, raw.get("pref_loss", "sigmoid"))
            elif value not in ("sft", "pt"):
                raise UserError(f"stage: {value}: sft, pt, dpo, kto and rm run here; PPO does not (for online RL use "
                                "Axolotl's rl: grpo with trl.reward_funcs)")
        elif key == "pref_loss":
            continue  # read with stage
        elif key == "do_train":  # LLaMA-Factory
            if value is True:
                continue
            raise UserError("do_train: false: plugin.train always trains; evaluate a saved adapter with "
                            "python -m plugin.eval --adapter DIR")
        elif key == "base_model_config":  # older Axolotl files repeat base_model here
            if value == raw.get("base_model"):
                continue
            raise UserError(f"base_model_config: {value}: a model config from elsewhere than base_model is not "
                            "supported; put the config.json in the base model's folder")
        elif key == "pissa_init":  # LLaMA-Factory: PiSSA with pissa_iter fast-SVD iterations (-1: full SVD)
            if not value:
                continue
            iterations = raw.get("pissa_iter", 16)
            key, value = "init_lora_weights", "pissa" if iterations == -1 else f"pissa_niter_{iterations}"
        elif key == "pissa_iter":
            continue  # read with pissa_init
        elif key == "pissa_convert":
            if value:
                raise UserError("pissa_convert: true (saving PiSSA as a plain LoRA delta) is not supported: the "
                                "adapter saves the factors its residual was taken with, so it loads onto the "
                                "original base as it is; drop pissa_convert")
            continue
        if key in ALIASES:
            spelled[ALIASES[key]] = key
            key = ALIASES[key]
        if key in peer_keys.TRAINER_KEYS:  # transformers' TrainingArguments fields, handed on as they are
            out.setdefault("trainer_args", {})[key] = value
            continue
        if key in out and out[key] != value:
            raise UserError(f"'{key}' is given twice (directly and through an alias); keep one")
        out[key] = value
    return out


# LLaMA-Factory's pref_loss under stage: dpo -> our rl stage
PREF_LOSSES = {"sigmoid": "dpo", "ipo": "ipo", "orpo": "orpo", "simpo": "simpo"}


def _llamafactory_rl(stage: str, pref_loss: str) -> str:
    if stage in ("kto", "rm"):
        return stage
    if pref_loss not in PREF_LOSSES:
        raise UserError(f"pref_loss: {pref_loss}: choose one of {', '.join(PREF_LOSSES)} (hinge, kto_pair and bco "
                        "are not supported)")
    return PREF_LOSSES[pref_loss]


def _check_values(cfg: TrainConfig, explicit_keys: list[str]) -> None:
    if cfg.cosine_min_lr_ratio is not None and (cfg.lr_scheduler != "cosine" or not 0 <= cfg.cosine_min_lr_ratio <= 1):
        raise UserError(f"cosine_min_lr_ratio: {cfg.cosine_min_lr_ratio} needs lr_scheduler: cosine and a value in "
                        f"[0, 1] (lr_scheduler is {cfg.lr_scheduler})")
    if (cfg.load_in_4bit or cfg.load_in_8bit) and str(cfg.init_lora_weights).startswith(("pissa", "olora")):
        raise UserError(f"init_lora_weights: {cfg.init_lora_weights} writes the residual W - s B A into the base, "
                        "which needs a full-precision base: drop load_in_4bit / load_in_8bit, or use "
                        "init_lora_weights: true")
    cfg.deepspeed = resolve_deepspeed(cfg.deepspeed)
    _check_fsdp(cfg)
    if cfg.push_to_hub and not cfg.hub_model_id:
        raise UserError("push_to_hub: true needs hub_model_id: owner/name (the hub repo to push the adapter to)")
    if cfg.hub_private_repo and not cfg.hub_model_id:
        raise UserError("hub_private_repo: true needs hub_model_id: owner/name (the hub repo to create)")
    if cfg.curriculum_sampling and cfg.group_by_length:
        raise UserError("curriculum_sampling (dataset order) and group_by_length (batches by length) both set the "
                        "row order; keep one")
    for name in ("saves_per_epoch", "eval_steps", "evals_per_epoch", "eval_batch_size"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be > 0, got {getattr(cfg, name)}")
    positive = ["lora_r", "micro_batch_size", "gradient_accumulation_steps", "sequence_len", "save_steps",
                "logging_steps"]
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be > 0, got {getattr(cfg, name)}")
    # lora_alpha 0 would leave every B at exactly zero: an adapter that learns nothing, silently
    for name in ("lora_alpha", "learning_rate", "adam_epsilon"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be > 0, got {getattr(cfg, name)}")
    for name in ("weight_decay", "max_grad_norm", "num_epochs"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("lora_dropout", "adam_beta1", "adam_beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise UserError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if not 0 <= cfg.seed < 2**32:
        raise UserError(f"seed must be in [0, 2**32 - 1] (numpy's range), got {cfg.seed}")
    for name in ("save_total_limit", "max_samples"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be > 0, got {getattr(cfg, name)}")
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
    _check_rl(cfg, explicit_keys)
    if cfg.lora_model_dir:
        _check_saved_adapter(cfg, explicit_keys)
    chat_templates.check_name(cfg.chat_template, cfg.chat_template_jinja)
    if cfg.lora_target_linear or cfg.lora_target_modules in [[name] for name in ALL_LINEAR]:
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
    _check_method_keys(cfg)


FSDP_OPTIONS = ("full_shard", "shard_grad_op", "hybrid_shard", "hybrid_shard_zero2", "no_shard", "offload",
                "auto_wrap")


def _check_fsdp(cfg: TrainConfig) -> None:
    """Axolotl's spellings to the HF Trainer's: a list of options (or the HF string), fsdp_config alone enabling it
    (Axolotl 0.19 with fsdp_version: 2), fsdp_version joining the config."""
    if cfg.fsdp is None and cfg.fsdp_config is None:
        if cfg.fsdp_version is not None:
            raise UserError("fsdp_version is set but FSDP is not: add fsdp_config (and fsdp) or drop fsdp_version")
        return
    if cfg.deepspeed is not None:
        raise UserError("fsdp and deepspeed are both set: one engine shards the model; keep one")
    # the HF string "full_shard auto_wrap" arrives as a one-item list (a YAML string may list names with commas)
    options = [o for item in ([cfg.fsdp] if isinstance(cfg.fsdp, str) else cfg.fsdp or ["full_shard", "auto_wrap"])
               for o in str(item).split()]
    unknown = [o for o in options if o not in FSDP_OPTIONS]
    if unknown:
        raise UserError(f"fsdp: unknown option '{unknown[0]}'{_suggest(unknown[0], list(FSDP_OPTIONS))}; options: "
                        f"{', '.join(FSDP_OPTIONS)}")
    config = _trainer_fsdp_config(cfg.fsdp_config or {}, options)
    version = cfg.fsdp_version if cfg.fsdp_version is not None else config.get("version")
    if version is None and any(str(k).startswith("fsdp_") for k in cfg.fsdp_config or {}):
        version = 1  # Axolotl's spelling (fsdp_-prefixed keys) means Axolotl's default; the HF Trainer's own is 2
        print("note: fsdp_version is not set: FSDP1, as Axolotl runs this file (set fsdp_version: 2 for FSDP2)",
              file=sys.stderr)
    if version not in (None, 1, 2):
        raise UserError(f"fsdp_version must be 1 or 2, got {version}")
    if version is not None:
        config["version"] = version
    cfg.fsdp, cfg.fsdp_config = options, config


# the fsdp_config keys transformers' Trainer reads ("fsdp_"-prefixed or not)
TRAINER_FSDP_KEYS = ("activation_checkpointing", "auto_wrap_policy", "backward_prefetch", "cpu_offload",
                     "cpu_ram_efficient_loading", "forward_prefetch", "limit_all_gathers", "min_num_params",
                     "reshard_after_forward", "state_dict_type", "sync_module_states", "transformer_layer_cls_to_wrap",
                     "use_orig_params", "version", "xla", "xla_fsdp_grad_ckpt", "xla_fsdp_settings", "xla_fsdp_v2")


def _trainer_fsdp_config(raw: dict, options: list[str]) -> dict:
    """fsdp_config in the keys the Trainer reads: prefixes dropped, Axolotl's names renamed, the rest refused in one
    line (the Trainer would drop an unknown key without a word)."""
    out = {}
    for key, value in raw.items():
        name = str(key).removeprefix("fsdp_")
        name = peer_keys.FSDP_RENAMED.get(name, name)
        if name in peer_keys.FSDP_REFUSED and value is not None:
            raise UserError(f"fsdp_config.{key}: {peer_keys.FSDP_REFUSED[name]}")
        if name in peer_keys.FSDP_IGNORED:
            print(f"note: ignoring fsdp_config.{key}: {peer_keys.FSDP_IGNORED[name]}", file=sys.stderr)
            continue
        if name == "sharding_strategy":  # set by the fsdp: options, as Axolotl (which does not read this key) does
            if str(value).lower() not in options:
                raise UserError(f"fsdp_config.{key}: {value} disagrees with fsdp: {options}; the fsdp options "
                                "choose the sharding (full_shard, shard_grad_op, ...)")
            continue
        if name not in TRAINER_FSDP_KEYS:
            raise UserError(f"fsdp_config.{key} is not an FSDP setting the Trainer reads"
                            f"{_suggest(name, list(TRAINER_FSDP_KEYS) + list(peer_keys.FSDP_RENAMED))}")
        out[name] = value
    return out


def _check_method_keys(cfg: TrainConfig) -> None:
    """The adapter is known, no other method's key is set, and the method's own config accepts the values."""
    derived = method_keys()
    adapters = ["lora", *METHODS, "full"]
    if cfg.adapter not in adapters:
        raise UserError(f"adapter must be {' or '.join(map(repr, adapters))}, got {cfg.adapter!r}"
                        f"{_suggest(cfg.adapter, adapters)}")
    stray = [key for key in cfg.method_keys if derived[key].method != cfg.adapter]
    if stray:
        method = derived[stray[0]].method
        raise UserError(f"{stray[0]} is set but adapter is '{cfg.adapter}'; set adapter: {method} or drop it")
    if cfg.adapter not in ("lora", "full"):
        peft_config_from_keys(to_dict(cfg))  # the method config's own validation, in the YAML's key names


# the preference keys and the rl: stages that read them (set under another stage, or without rl:, they would change
# nothing)
RL_KEYS = {"rl_beta": ("dpo", "ipo", "kto", "simpo", "grpo"), "dpo_label_smoothing": ("dpo",),
           "rpo_alpha": ("dpo", "ipo"), "orpo_alpha": ("orpo",), "simpo_gamma": ("simpo",), "cpo_alpha": ("simpo",),
           "kto_desirable_weight": ("kto",), "kto_undesirable_weight": ("kto",), "trl": ("grpo",)}


def _check_saved_adapter(cfg: TrainConfig, explicit_keys: list[str]) -> None:
    """``lora_model_dir``: a folder holding an adapter of one of our methods (or LoRA); its method becomes the run's."""
    folder = Path(cfg.lora_model_dir)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"lora_model_dir (adapter_name_or_path): {folder} holds no adapter_config.json; give a finished run's output_dir "
                        "(or a checkpoint-N folder of it)")
    import json

    peft_type = json.loads(config_file.read_text()).get("peft_type")
    saved = {"LORA": "lora", **{config_cls._peft_type_name: name for name, (config_cls, _) in METHODS.items()}}.get(
        peft_type)
    if saved is None:
        raise UserError(f"lora_model_dir: {folder} holds a {peft_type} adapter; lora, mplora, mor and loratrf train "
                        "here")
    if "adapter" in explicit_keys and cfg.adapter != saved:
        raise UserError(f"adapter: {cfg.adapter}, but lora_model_dir {folder} holds a {saved} adapter; drop adapter: "
                        "or set it to the saved one's")
    cfg.adapter = saved
    shaping = sorted(k for k in explicit_keys if k in ("lora_r", "lora_alpha", "lora_target_modules",
                                                       "lora_target_linear") or k in cfg.method_keys)
    if shaping:
        print(f"note: lora_model_dir: the saved adapter's own settings are trained on; {', '.join(shaping)} from "
              "the YAML do not change it", file=sys.stderr)


def _check_rl(cfg: TrainConfig, explicit_keys: list[str]) -> None:
    for key, stages in RL_KEYS.items():
        if key in explicit_keys and cfg.rl not in stages:
            raise UserError(f"{key} is set but {'rl is not' if cfg.rl is None else f'rl: {cfg.rl} does not read it'};"
                            f" it is read by rl: {' / '.join(stages)}")
    transforms = [d.type for d in cfg.datasets + cfg.test_datasets if is_transform(d.type)]
    if transforms and cfg.rl is None:
        raise UserError(f"dataset type {transforms[0]}: a transform function (module.function) prepares rl: data, "
                        "as Axolotl's; for SFT use one of the formats (messages, sharegpt, alpaca, text)")
    if cfg.rl is None:
        rl_types = [d.type for d in cfg.datasets + cfg.test_datasets if d.type in RL_TYPES]
        if rl_types:
            raise UserError(f"dataset type {rl_types[0]} holds preference data, read by rl: (dpo, kto, ...); set rl: "
                            "or use an SFT type (messages, sharegpt, alpaca, text)")
        return
    if cfg.rl == "rm" and cfg.eval is not None:
        raise UserError("eval: scores a language model with lm-eval; rl: rm trains a reward model (one score per "
                        "text): drop the eval: section")
    if cfg.task != "causal_lm" or cfg.adapter == "full":
        raise UserError(f"rl: {cfg.rl} trains an adapter on a causal LM: drop task / adapter: full")
    if cfg.sample_packing:
        raise UserError(f"sample_packing: rl: {cfg.rl} compares whole answers, which packing would cut; drop it")
    if cfg.method_keys.get("loratrf_task_vector_init") == "input_mean":
        raise UserError("loratrf_task_vector_init: input_mean is set from SFT rows; under rl: use random (the "
                        "default)")
    if cfg.rl == "kto" and cfg.micro_batch_size < 2:
        raise UserError("rl: kto takes each row's KL answer from another row of its batch (TRL's KTOTrainer): set "
                        "micro_batch_size: 2 or more")
    if cfg.rl == "grpo":
        if cfg.trl is None or not cfg.trl.reward_funcs:
            raise UserError("rl: grpo scores sampled completions with reward functions: add trl: {reward_funcs: "
                            "[module.function]} (docs/preference.md)")
        if None not in (cfg.trl.beta, cfg.rl_beta) and cfg.trl.beta != cfg.rl_beta:
            raise UserError(f"trl.beta ({cfg.trl.beta}) and rl_beta ({cfg.rl_beta}) are the same setting; keep one")
        if cfg.trl.advantage_estimator == "rloo":
            grpo_only = [k for k in ("loss_type", "scale_rewards") if getattr(cfg.trl, k) is not None]
            if grpo_only:
                raise UserError(f"trl.{grpo_only[0]} is GRPO's; advantage_estimator: rloo (TRL's RLOOTrainer) has "
                                "none: drop one of them")
        if cfg.trl.reward_weights is not None and len(cfg.trl.reward_weights) != len(cfg.trl.reward_funcs):
            raise UserError(f"trl.reward_weights has {len(cfg.trl.reward_weights)} weights for "
                            f"{len(cfg.trl.reward_funcs)} reward functions; give one each")
        for path in cfg.trl.reward_funcs:  # imported now: a typo is found before the model loads
            import_object(path, "trl.reward_funcs")
    for path in transforms:
        import_object(path, "datasets[].type")


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


class DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key written twice in one mapping is an error: YAML keeps the last one
    silently, so a second ``datasets:`` would train only its list."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen and key != "<<":
                raise DuplicateKey(f"key '{key}' is written twice in one mapping (lines {seen[key]} and {line}); "
                                   "keep one")
            seen.setdefault(key, line)
        return super().construct_mapping(node, deep)


def load_config(path: str | os.PathLike | None, overrides: dict | None = None) -> TrainConfig:
    """Read, alias, type-check and validate a training YAML (plus command-line overrides)."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file not found: {p}")
        try:
            raw = yaml.load(p.read_text(), Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader)
        except DuplicateKey as err:
            raise UserError(f"{p}: {err}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise UserError(f"{p} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
        if not isinstance(raw, dict):
            raise UserError(f"{p} must hold a mapping of keys, got {type(raw).__name__}")
    spelled: dict[str, str] = {}
    raw = {**_canonical_keys(raw, spelled), **_canonical_keys(overrides or {}, spelled)}
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
    cfg = _build(TrainConfig, raw, spelled=spelled)
    _check_values(cfg, list(raw))
    chats = [d.path for d in cfg.datasets if d.type not in TEXT_TYPES]
    if plain_text and chats:
        raise UserError(f"stage: pt trains plain text, but dataset {chats[0]} is not type: text; set its type "
                        "to text (field: COLUMN) or use stage: sft")
    return cfg
