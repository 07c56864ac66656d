"""Every key of the training YAML, declared once: type, default, section and help text (PEFT / TRL style
``field(metadata={"help": ...})``). ``--help``, ``docs/configuration.md`` and validation read these declarations;
the method keys (``mor_num_experts``, ...) are not here but derived from the tuners' configs (``method_keys``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from .method_keys import method_keys

# sections of --help and docs/configuration.md, in order ("method" holds the derived method keys)
SECTIONS = ("model", "adapter", "method", "data", "training", "preference", "output", "eval")
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
EMBEDDED_ENCODER = "embedded:all-minilm-l6-v2"  # task: sequence_classification's default base
TEXT_TYPES = ("text", "completion")  # dataset types trained as plain text
# our chat roles and the names data uses for them (Axolotl's defaults); a dataset's own ``roles:`` replaces them
# the rl: stages, and the row formats they read: TRL's own (preference, kto, prompt) and Axolotl's DPO / KTO types
# (chatml.* and llama3.* read the same columns: rendering is the chat template's job here)
RL_STAGES = ("dpo", "ipo", "kto", "orpo", "simpo", "grpo", "rm")
_AXOLOTL_RL_TYPES = ("intel", "icr", "prompt_pairs", "ultra", "argilla", "argilla_chat")
RL_TYPES = ("preference", "kto", "prompt", "chat_template.default", "chat_template.argilla", "chat_template.argilla_chat",
            *(f"{t}.{kind}" for t in ("chatml", "llama3") for kind in _AXOLOTL_RL_TYPES))
SFT_TYPES = ("messages", "chat_template", "sharegpt", "alpaca", "text", "completion")
DEFAULT_ROLES = {
    "system": ["system"],
    "user": ["user", "human"],
    "assistant": ["assistant", "gpt", "model", "function_call"],  # LLaMA-Factory trains function calls
    "tool": ["tool", "observation", "function_response", "ipython"],
}


def option(section: str, default: Any = dataclasses.MISSING, help: str = "", *, factory=None) -> Any:
    """A YAML key: its default (or ``factory`` for a mutable one), the --help section it is listed under, its meaning."""
    kwargs = {"default_factory": factory} if factory is not None else {"default": default}
    return field(**kwargs, metadata={"section": section, "help": help})


@dataclass
class DatasetSpec:
    """One entry of ``datasets:`` / ``test_datasets:``."""

    path: str = option("data", help="local .json/.jsonl/.parquet/.csv file, a saved dataset folder, or a hub id")
    type: Literal[SFT_TYPES + RL_TYPES] = option(
        "data", "messages", "row format: messages (= chat_template, OpenAI {role, content} chats), sharegpt "
        "({from, value} chats), alpaca (instruction/input/output), text (= completion: plain text, every token "
        "trained); under rl: preference (TRL's prompt/chosen/rejected, text or chats: the default), kto (TRL's "
        "prompt/completion/label), prompt (grpo: a prompt column; the other columns reach the reward functions), "
        "Axolotl's chatml.* / llama3.* (intel, icr, prompt_pairs, ultra, argilla_chat; kto: argilla) and "
        "chat_template.default / argilla / argilla_chat, or your own transform as Axolotl's module.function "
        "(docs/preference.md)")  # a module.function passes as it is; config/loader.py checks it under rl:
    split: str = option("data", "train", "split of a hub or saved dataset")
    name: Optional[str] = option("data", None, "hub dataset config name")
    field_messages: Optional[str] = option("data", None, "column holding the chat (default messages; conversations "
                                                         "for sharegpt)")
    message_property_mappings: Optional[dict[str, str]] = option(
        "data", None, "message keys of the data, e.g. {role: from, content: value}")
    roles: Optional[dict[str, list[str]]] = option(
        "data", None, "our role -> the data's names for it, e.g. {assistant: [gpt, bot]}; replaces the defaults")
    roles_to_train: list[str] = option("data", help="roles whose turns are trained", factory=lambda: ["assistant"])
    train_on_eos: Literal["turn", "last", "all", "none"] = option(
        "data", "turn", "which end-of-turn tokens are trained: those of trained turns, the last one, all, none")
    field_instruction: str = option("data", "instruction", "alpaca: the instruction column")
    field_input: str = option("data", "input", "alpaca: the input column (appended to the instruction)")
    field_output: str = option("data", "output", "alpaca: the answer column")
    field_system: Optional[str] = option("data", None, "alpaca: a system-prompt column")
    field_history: Optional[str] = option("data", None, "alpaca: earlier [prompt, answer] pairs, trained too "
                                                        "(LLaMA-Factory)")
    field_prompt: Optional[str] = option("data", None, "preference / kto / prompt: the prompt column, text or chat "
                                                        "(default: the type's, prompt)")
    field_chosen: Optional[str] = option("data", None, "preference: the chosen answer's column, text, a message or a "
                                                        "chat (default: the type's, chosen)")
    field_rejected: Optional[str] = option("data", None, "preference: the rejected answer's column (default: the "
                                                          "type's, rejected)")
    field_completion: str = option("data", "completion", "kto: the answer column")
    field_label: str = option("data", "label", "kto: the column saying whether the answer is good (true) or bad")
    drop_system_message: bool = option("data", False, "chats: leave out a leading system turn")
    field: str = option("data", "text", "text / completion: the text column")
    max_samples: Optional[int] = option("data", None, "at most this many rows of this dataset")


@dataclass
class EvalSpec:
    """The ``eval:`` section: runs the eval bridge on the trained adapter after training."""

    suite: Optional[str] = option("eval", None, "task suite: commonsense, math, mmlu, mor, loratrf")
    tasks: Optional[list[str]] = option("eval", None, "lm-eval task names (or local file names with data_dir)")
    limit: Optional[int] = option("eval", None, "at most this many items per task")
    batch_size: int = option("eval", 8, "evaluation batch size")
    num_fewshot: Optional[int] = option("eval", None, "few-shot examples per prompt")
    data_dir: Optional[str] = option("eval", None, "folder of <task>.jsonl files: evaluate offline (data/eval)")
    apply_chat_template: bool = option("eval", False, "prompts in the chat format a chat-trained adapter saw")
    output: Optional[str] = option("eval", None, "results folder (default: <output_dir>/eval)")


@dataclass
class TrlSpec:
    """The ``trl:`` section (Axolotl's): GRPO's generation and rewards."""

    reward_funcs: list[str] = option("preference", help="GRPO: reward functions as importable paths (module.function "
                                     "or module:function), each called as TRL calls them (prompts, completions, "
                                     "**columns) -> list of floats", factory=list)
    reward_weights: Optional[list[float]] = option("preference", None, "GRPO: one weight per reward function "
                                                                       "(default: all 1)")
    num_generations: int = option("preference", 4, "GRPO: completions sampled per prompt (the group its advantages "
                                                   "are taken in); micro_batch_size * processes * "
                                                   "gradient_accumulation_steps must divide by it")
    advantage_estimator: Literal["grpo", "rloo"] = option(
        "preference", "grpo", "GRPO: grpo (reward minus the group's mean, TRL's GRPOTrainer) or rloo (minus the mean "
        "of the other completions of its prompt: TRL's RLOOTrainer, which has no loss_type or scale_rewards)")
    max_completion_length: int = option("preference", 256, "GRPO: longest sampled completion in tokens")
    temperature: float = option("preference", 1.0, "GRPO: sampling temperature")
    top_p: float = option("preference", 1.0, "GRPO: nucleus sampling")
    top_k: int = option("preference", 0, "GRPO: top-k sampling (0: off)")
    beta: Optional[float] = option("preference", None, "GRPO: the KL coefficient (= rl_beta; default 0: no reference "
                                                       "forward)")
    loss_type: Optional[Literal["grpo", "dr_grpo", "dapo", "bnpo"]] = option(
        "preference", None, "GRPO: TRL's loss_type (default: TRL's, dapo)")
    scale_rewards: Optional[Literal["group", "batch", "none"]] = option(
        "preference", None, "GRPO: divide advantages by the reward std of the group, the batch, or not at all "
        "(default: TRL's, group)")
    epsilon: float = option("preference", 0.2, "GRPO: the clipping range of the policy ratio")
    use_vllm: bool = option("preference", False, "generate with a vLLM server (Axolotl's vllm: section): refused, "
                                                 "GRPO samples inside the trainer (docs/preference.md)")


@dataclass
class TrainConfig:
    """A training run. Keys follow Axolotl; LLaMA-Factory's names are aliases (``ALIASES``)."""

    # model
    task: Literal["causal_lm", "sequence_classification"] = option(
        "model", "causal_lm", "what is trained: a causal LM on text/chats, or a classifier "
        "(AutoModelForSequenceClassification) on GLUE-style rows (sentence1 + sentence2, or sentence / text, and label)")
    num_labels: Optional[int] = option("model", None, "sequence_classification: classes; 1 = regression (Pearson)")
    base_model: str = option("model", EMBEDDED_MODEL, "hub id, local folder, or embedded:smollm2-135m-instruct / "
                                                      "embedded:all-minilm-l6-v2 (sequence_classification's default)")
    tokenizer: Optional[str] = option("model", None, "tokenizer to load (default: base_model's)")
    load_in_4bit: bool = option("model", False, "bitsandbytes nf4 base (QLoRA)")
    load_in_8bit: bool = option("model", False, "bitsandbytes 8-bit base")
    trust_remote_code: bool = option("model", False, "run the model repo's own code (transformers' flag)")
    attn_implementation: Optional[str] = option("model", None, "transformers' name: eager, sdpa, flash_attention_2")
    eot_tokens: Optional[list[str]] = option("model", None, "tokens that close a chat turn (default: common ones)")
    special_tokens: Optional[dict[str, str]] = option(
        "model", None, "e.g. {pad_token: '<|end_of_text|>'}: roles for tokens already in the vocabulary")
    chat_template: Optional[str] = option("model", None, "chat template: the tokenizer's own (unset), a name (chatml, "
                                                         "llama3, qwen3, ...) or Jinja text")
    chat_template_jinja: Optional[str] = option("model", None, "the Jinja text for chat_template: jinja")
    # adapter (shared with peft.LoraConfig)
    adapter: str = option("adapter", "lora", "lora (PEFT's), mplora, mor, loratrf, or full (every weight; "
                                             "classification only); Axolotl's qlora = lora + load_in_4bit")
    lora_r: int = option("adapter", 8, "rank r of the low-rank update")
    lora_alpha: float = option("adapter", 16, "scaling numerator: s = lora_alpha / r")
    lora_dropout: float = option("adapter", 0.0, "dropout on the adapter input")
    lora_target_modules: Optional[list[str]] = option(
        "adapter", None, "layers to adapt (names or one regex); unset: the method's paper defaults; all-linear: every "
        "linear layer")
    lora_target_linear: bool = option("adapter", False, "adapt every linear layer (= lora_target_modules: all-linear)")
    lora_modules_to_save: Optional[list[str]] = option("adapter", None, "modules trained in full and saved beside "
                                                                        "the adapter (e.g. a classifier's pooler)")
    peft_use_rslora: bool = option("adapter", False, "rank-stabilised scaling: s = lora_alpha / sqrt(r)")
    lora_target_parameters: Optional[list[str]] = option(
        "adapter", None, "raw parameters to adapt, e.g. MoE experts' 3D mlp.experts.gate_up_proj (PEFT's "
        "target_parameters): adapter: lora and mplora (a weight delta per expert); mor and loratrf refuse it")
    lora_rank_pattern: Optional[dict[str, int]] = option(
        "adapter", None, "rank per layer, overriding lora_r: {layer-name key or regex: r} (PEFT's rank_pattern)")
    lora_alpha_pattern: Optional[dict[str, float]] = option(
        "adapter", None, "alpha per layer, overriding lora_alpha (PEFT's alpha_pattern)")
    lora_model_dir: Optional[str] = option(
        "adapter", None, "a saved adapter (a run's output_dir) to go on training, with its own method and settings "
        "(the YAML's adapter: must agree or be unset); under rl: it is the reference too: DPO from an SFT adapter")
    init_lora_weights: Union[bool, str] = option(
        "adapter", True, "the adapter's init (PEFT's name): true (the papers'), gaussian, pissa, pissa_niter_K "
        "(fast SVD), olora; PiSSA / OLoRA move W's principal part into the adapter and leave the residual in the "
        "base (a full-precision base; LLaMA-Factory's pissa_init / pissa_iter map here)")
    # data
    datasets: list[DatasetSpec] = option("data", help="training data: a list of dataset entries (keys below)",
                                         factory=list)
    test_datasets: list[DatasetSpec] = option("data", help="held-out data scored during and after training",
                                              factory=list)
    val_set_size: float = option("data", 0.0, "fraction (< 1) or number of rows held out for eval loss")
    sequence_len: int = option("data", 1024, "longest row in tokens")
    excess_length_strategy: Literal["drop", "truncate", "raise"] = option(
        "data", "drop", "a chat or alpaca row whose trained tokens do not fit sequence_len: drop it, truncate it, or "
        "stop (Axolotl's key); counted on stderr. Text documents are split into sequence_len chunks instead")
    sample_packing: bool = option("data", False, "pack several rows into each sequence (TRL best-fit packing)")
    train_on_inputs: bool = option("data", False, "false: loss on the roles_to_train turns only; true: every token")
    max_samples: Optional[int] = option("data", None, "rows taken from each dataset without its own max_samples")
    dataset_exact_deduplication: bool = option("data", False, "identical prepared rows kept once")
    dataset_processes: Optional[int] = option("data", None, "processes tokenising the data (default: all cores for "
                                                            ">= 20k rows)")
    # training
    micro_batch_size: int = option("training", 1, "rows per device per step")
    gradient_accumulation_steps: int = option("training", 1, "micro-batches per optimiser step")
    num_epochs: float = option("training", 1.0, "passes over the data (max_steps wins when set)")
    max_steps: int = option("training", -1, "optimiser steps; -1: from num_epochs")
    learning_rate: float = option("training", 2e-4, "peak learning rate")
    lr_scheduler: str = option("training", "cosine", "transformers' scheduler name (cosine, linear, constant, ...)")
    cosine_min_lr_ratio: Optional[float] = option("training", None, "cosine decays to this fraction of learning_rate")
    warmup_ratio: float = option("training", 0.0, "warmup as a fraction of the steps")
    warmup_steps: Optional[int] = option("training", None, "warmup as a number of steps (instead of warmup_ratio)")
    adam_beta1: float = option("training", 0.9, "AdamW beta1")
    adam_beta2: float = option("training", 0.999, "AdamW beta2")
    adam_epsilon: float = option("training", 1e-8, "AdamW epsilon")
    weight_decay: float = option("training", 0.0, "AdamW weight decay")
    max_grad_norm: float = option("training", 1.0, "gradient clipping norm")
    optimizer: str = option("training", "adamw_torch", "transformers' optimizer name (adamw_torch, adamw_bnb_8bit, ...)")
    bf16: Union[bool, Literal["auto"]] = option("training", False, "bfloat16 mixed precision; auto: where the GPU has it")
    fp16: bool = option("training", False, "float16 mixed precision (GPUs without bf16)")
    group_by_length: bool = option("training", False, "batches of similar lengths (less padding; changes the order)")
    curriculum_sampling: bool = option("training", False, "rows in dataset order, not shuffled")
    gradient_checkpointing: Union[bool, Literal["offload"]] = option(
        "training", False, "recompute activations in the backward; offload: also keep saved activations on the CPU")
    seed: int = option("training", 42, "seed of the adapter init, data order and dropout")
    trainer_args: Optional[dict[str, Any]] = option(
        "training", None, "more transformers TrainingArguments fields, handed to the Trainer as they are (e.g. "
        "{neftune_noise_alpha: 5, save_strategy: epoch}); those fields written at the top level, as Axolotl and "
        "LLaMA-Factory allow, land here")
    fsdp: Union[list[str], str, None] = option(
        "training", None, "FSDP for the Trainer (TrainingArguments.fsdp): Axolotl's list (full_shard, auto_wrap, "
        "offload, ...) or the HF string; set by fsdp_config alone too; launch with torchrun or accelerate launch")
    fsdp_config: Optional[dict[str, Any]] = option(
        "training", None, "FSDP settings (TrainingArguments.fsdp_config): Axolotl's fsdp_-prefixed keys or the HF "
        "names (transformer_layer_cls_to_wrap, offload_params, cpu_ram_efficient_loading, state_dict_type, ...)")
    fsdp_version: Optional[int] = option("training", None, "FSDP 1 or 2 (Axolotl's key; the HF fsdp_config version)")
    deepspeed: Union[str, dict[str, Any], None] = option(
        "training", None, "DeepSpeed config for the Trainer (TrainingArguments.deepspeed): a JSON file, read from the "
        "working directory (Axolotl's deepspeed_configs/*.json and LLaMA-Factory's examples/deepspeed/*.json names "
        "fall back to copies shipped here), or an inline mapping; launch with torchrun, accelerate launch or deepspeed")
    # preference and RL stages (TRL's trainers; docs/preference.md)
    rl: Optional[Literal[RL_STAGES]] = option(
        "preference", None, "train on preferences instead of SFT: dpo, ipo (DPO's IPO loss), kto (unpaired "
        "good/bad answers), orpo and simpo (no reference model), grpo (online: sampled completions scored by "
        "trl.reward_funcs), rm (a reward model: the base with a one-score head, chosen scored above rejected); "
        "LLaMA-Factory's stage: dpo / kto / rm and pref_loss, Axolotl's reward_model: true map here")
    rl_beta: Optional[float] = option(
        "preference", None, "beta: DPO/IPO/KTO's strength of the pull towards the reference (TRL's default 0.1), "
        "SimPO's reward scale (the paper's 2.0; TRL's default 0.1), GRPO's KL coefficient (default 0)")
    dpo_label_smoothing: float = option("preference", 0.0, "dpo: the assumed rate of flipped preference labels "
                                                           "(conservative DPO)")
    rpo_alpha: Optional[float] = option("preference", None, "dpo / ipo: weight of an NLL term on the chosen answers "
                                                            "added to the loss (RPO; LLaMA-Factory's pref_ftx)")
    orpo_alpha: float = option("preference", 0.1, "orpo: lambda, the weight of the odds-ratio term beside the NLL")
    simpo_gamma: float = option("preference", 0.5, "simpo: the paper's target reward margin gamma")
    cpo_alpha: float = option("preference", 0.0, "simpo: weight of an NLL term on the chosen answers (CPO's "
                                                 "behaviour cloning); 0 is the paper's SimPO")
    kto_desirable_weight: float = option("preference", 1.0, "kto: weight of the good (label true) answers' loss")
    kto_undesirable_weight: float = option("preference", 1.0, "kto: weight of the bad (label false) answers' loss")
    trl: Optional[TrlSpec] = option("preference", None, "GRPO's section: reward functions, sampling (keys below)")
    # outputs
    output_dir: str = option("output", "outputs/run", "run folder: checkpoints, adapter, metrics")
    overwrite_output_dir: bool = option("output", False, "start over in an output_dir that holds a finished run")
    resume_from_checkpoint: Optional[str] = option(
        "output", "auto", "auto: continue from the newest checkpoint if there is one; a path; null: start over")
    save_steps: int = option("output", 100, "checkpoint every N steps")
    saves_per_epoch: Optional[int] = option("output", None, "checkpoint N times per epoch instead of every save_steps")
    eval_steps: Optional[int] = option("output", None, "held-out loss every N steps (default: save_steps)")
    evals_per_epoch: Optional[int] = option("output", None, "evaluate N times per epoch instead")
    eval_strategy: Optional[Literal["steps", "epoch", "no"]] = option("output", None, "when the held-out loss runs")
    eval_batch_size: Optional[int] = option("output", None, "held-out batch size (default: micro_batch_size)")
    save_total_limit: Optional[int] = option("output", None, "keep at most N checkpoints")
    logging_steps: int = option("output", 10, "log every N steps")
    report_to: str = option("output", "none", "transformers' report_to: none, tensorboard, wandb, ...")
    hub_model_id: Optional[str] = option(
        "output", None, "push the finished adapter (model card, eval scores) to this hub repo, owner/name; needs "
        "HF_TOKEN or `hf auth login`")
    push_to_hub: bool = option("output", False, "push to hub_model_id (setting hub_model_id alone also pushes)")
    hub_private_repo: bool = option("output", False, "create the hub repo as private")
    eval: Optional[EvalSpec] = option("eval", None, "lm-eval on the trained adapter after training (keys below)")
    # the method keys the YAML set (mor_num_experts: 4, ...): declared by the tuners' configs, see method_keys
    method_keys: dict[str, Any] = field(default_factory=dict, metadata={"section": None})

    def method_value(self, key: str) -> Any:
        """A method key's value: what the YAML set, else the method config's default."""
        return self.method_keys.get(key, method_keys()[key].default)


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
    "evaluation_strategy": "eval_strategy",  # transformers' former name
    "tokenizer_config": "tokenizer",  # Axolotl
    "disable_shuffling": "curriculum_sampling",
    "train_on_prompt": "train_on_inputs",
    "peft_init_lora_weights": "init_lora_weights",  # Axolotl's PEFT-prefixed spelling
    "noisy_embedding_alpha": "neftune_noise_alpha",  # Axolotl's former name
    "adapter_name_or_path": "lora_model_dir",  # LLaMA-Factory
    "pref_beta": "rl_beta",  # LLaMA-Factory
    "pref_ftx": "rpo_alpha",
    "kto_chosen_weight": "kto_desirable_weight",
    "kto_rejected_weight": "kto_undesirable_weight",
}


def yaml_fields(cls: type = TrainConfig) -> list[dataclasses.Field]:
    """The fields a YAML may set (``method_keys`` is filled from the derived method keys, not set directly)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("section")]


# beside every plugin.train output: to_dict(cfg) as YAML; plots, chat and export read a run's settings from it
RESOLVED_CONFIG_FILE = "resolved_config.yaml"


def to_dict(cfg: TrainConfig) -> dict:
    """The resolved config as flat YAML keys: every method key with its value or default, after the adapter keys."""
    out = {}
    for f in yaml_fields(TrainConfig):
        out[f.name] = _plain(getattr(cfg, f.name))
        if f.name == "peft_use_rslora":
            out.update({key: cfg.method_value(key) for key in method_keys()})
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
