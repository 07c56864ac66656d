"""The YAML's training keys as a Trainer's arguments: TRL's SFTConfig, transformers' TrainingArguments, and the
fields every preference stage's config shares (``preference.py``)."""

from __future__ import annotations

from ..config import TrainConfig
from ..models.loader import resolve_bf16


def _schedule(every: int, per_epoch: int | None, num_epochs: float) -> tuple[str, float]:
    """(strategy, steps) for save/eval: a fixed step count, or Axolotl's N times per epoch (a float < 1 is the
    Trainer's ratio of the total steps)."""
    if not per_epoch:
        return "steps", every
    ratio = 1 / (per_epoch * max(num_epochs, 1))
    return ("steps", ratio) if ratio < 1 else ("epoch", every)


def sampling_strategy(cfg: TrainConfig) -> str:
    return "group_by_length" if cfg.group_by_length else "sequential" if cfg.curriculum_sampling else "random"


def common_arguments(cfg: TrainConfig, has_eval: bool, use_cpu: bool) -> dict:
    """The TrainingArguments fields every stage's config shares, from the YAML (TRL's CPU defaults, bf16=True and
    gradient checkpointing on, must not surprise: the YAML decides)."""
    save_strategy, save_steps = _schedule(cfg.save_steps, cfg.saves_per_epoch, cfg.num_epochs)
    eval_strategy, eval_steps = _schedule(cfg.eval_steps or save_steps, cfg.evals_per_epoch, cfg.num_epochs)
    if cfg.eval_strategy:
        eval_strategy = cfg.eval_strategy
    common = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        # Axolotl's cosine_min_lr_ratio is transformers' cosine_with_min_lr (same curve: cosine from 1 to the ratio)
        lr_scheduler_type="cosine_with_min_lr" if cfg.cosine_min_lr_ratio is not None else cfg.lr_scheduler,
        lr_scheduler_kwargs={"min_lr_rate": cfg.cosine_min_lr_ratio} if cfg.cosine_min_lr_ratio is not None else {},
        # transformers 5: a float < 1 is a ratio of the total steps, an int a number of steps
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps is not None else cfg.warmup_ratio,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optimizer,
        bf16=resolve_bf16(cfg.bf16) and not cfg.fp16,
        fp16=cfg.fp16,
        train_sampling_strategy=sampling_strategy(cfg),
        gradient_checkpointing=bool(cfg.gradient_checkpointing),
        # reentrant checkpointing would run the forward, where the auxiliary losses are computed, without gradients
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=cfg.logging_steps,
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy=eval_strategy if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=cfg.report_to,
        ddp_find_unused_parameters=False,
        use_cpu=use_cpu,
        deepspeed=cfg.deepspeed,
        fsdp=" ".join(cfg.fsdp) if cfg.fsdp else "",
        fsdp_config=cfg.fsdp_config,
    )
    extra = dict(cfg.trainer_args or {})
    # the YAML's scheduler arguments join the ones cosine_min_lr_ratio sets
    extra["lr_scheduler_kwargs"] = {**common["lr_scheduler_kwargs"], **extra.get("lr_scheduler_kwargs", {})}
    common.update(extra)
    return common


def training_arguments(cfg: TrainConfig, has_eval: bool, use_cpu: bool):
    """TRL's SFTConfig for a causal LM, transformers' TrainingArguments for sequence classification: same keys."""
    common = common_arguments(cfg, has_eval, use_cpu)
    if cfg.task == "sequence_classification":
        from transformers import TrainingArguments

        return TrainingArguments(**common)
    from trl import SFTConfig

    # rows arrive tokenised, labelled and truncated (plugin.data); TRL's pass over them is needed only to pack
    return SFTConfig(**common, max_length=cfg.sequence_len, packing=cfg.sample_packing,
                     dataset_kwargs={"skip_prepare_dataset": not cfg.sample_packing})
