"""One fine-tuning run (``python -m plugin.train CONFIG``): fine-tune a causal LM (or, with ``task:
sequence_classification``, a sequence classifier) with LoRA, MPLoRA, MoR or LoRATRF.

Works the same under ``accelerate launch -m plugin.train`` and ``torchrun -m plugin.train``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from ..config import TrainConfig, to_dict
from ..config.schema import RESOLVED_CONFIG_FILE
from ..evaluation.harness import check_eval_section
from ..models.hub import check_can_push
from ..models.loader import resolve_bf16
from ..utils.errors import UserError, first_line
from . import run_dir
from .arguments import training_arguments
from .card import add_training_section


def _invalid_value(err: ValueError) -> UserError:
    return UserError(first_line(err))


def train(cfg: TrainConfig) -> Path:
    """Run one fine-tune; return the folder holding the final adapter."""
    import torch
    from accelerate import PartialState
    from peft import get_peft_model
    from transformers import set_seed

    from ..config.peft_mapping import build_peft_config
    from ..data.loader import load_training_data
    from ..evaluation.classification import classification_metrics, per_item_outcomes
    from ..models.adapter_io import load_adapter_strict, read_adapter_config, read_adapter_weights
    from ..models.loader import load_base_model, tokenizer_for
    from ..models.targets import check_modules_to_save, check_target_modules
    from .telemetry import AdapterTelemetryCallback
    from .trainer import AuxLossSFTTrainer, AuxLossTrainer, init_task_vectors_from_first_rows

    # without cpu=True accelerate ignores torchrun's WORLD_SIZE on a CPU-only machine and runs each rank alone
    use_cpu = not torch.cuda.is_available()
    if cfg.deepspeed is not None and use_cpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's CPU accelerator (gloo), as on CPU-only CI
    if cfg.fsdp and use_cpu:
        raise UserError("fsdp: FSDP needs GPUs (accelerate enables it only on accelerators, and would silently run "
                        "each process on a full copy here); on CPU drop fsdp / fsdp_config, or use deepspeed:")
    if cfg.fsdp:  # what `accelerate launch` with an FSDP config exports: a 4-bit base then loads as FSDP shards it
        os.environ["ACCELERATE_USE_FSDP"] = "true"
    state = PartialState(cpu=use_cpu)
    config = to_dict(cfg)
    run = run_dir.plan(cfg, config)
    if cfg.eval is not None:  # it runs after training: checked now, not after an hour of training
        check_eval_section(cfg.eval)
    if cfg.hub_model_id:  # so is the push
        check_can_push(cfg.hub_model_id)
    peft_config = None if cfg.adapter == "full" else build_peft_config(cfg)
    tokenizer = tokenizer_for(cfg)
    if cfg.rl:  # the rows TRL's preference trainers read; they tokenise them
        from ..data.preference import load_preference_data

        train_data, eval_data = load_preference_data(cfg, tokenizer)
    else:
        train_data, eval_data = load_training_data(cfg, tokenizer)
    bf16 = resolve_bf16(cfg.bf16)
    model = load_base_model(
        cfg.base_model,
        load_in_4bit=cfg.load_in_4bit,
        load_in_8bit=cfg.load_in_8bit,
        bf16=bf16,
        gradient_checkpointing=bool(cfg.gradient_checkpointing),
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
        num_labels=1 if cfg.rl == "rm" else cfg.num_labels,  # a reward model: one score per text
    )
    check_target_modules(model, cfg.lora_target_modules)
    check_modules_to_save(model, cfg.lora_modules_to_save)
    set_seed(cfg.seed)  # the adapter's random init must not depend on what ran before
    if cfg.lora_model_dir:  # go on training a saved adapter: its own config (under rl: also the reference)
        folder = Path(cfg.lora_model_dir)
        model = load_adapter_strict(model, str(folder), read_adapter_config(folder), read_adapter_weights(folder),
                                    trainable=True)
        peft_config = model.peft_config["default"]
    try:
        model = model if peft_config is None or cfg.rl or cfg.lora_model_dir else get_peft_model(model, peft_config)
    except ValueError as err:  # PEFT's own checks (no default targets for this model type, ...)
        raise _invalid_value(err) from None
    try:
        callbacks = dict(callbacks=[AdapterTelemetryCallback()],
                         offload_activations=cfg.gradient_checkpointing == "offload")
        if cfg.rl:  # TRL's preference trainer adds the adapter to the base itself: its reference is the base
            from .preference import preference_arguments, preference_trainer

            args = preference_arguments(cfg, eval_data is not None, use_cpu)
            check_optimizer(args)
            # a saved adapter passed in is copied by TRL as adapter "ref", the reference; a config: the base is
            trainer = preference_trainer(cfg, model, None if cfg.lora_model_dir else peft_config, args, train_data,
                                         eval_data, tokenizer, **callbacks)
            model = trainer.model
        else:
            args = training_arguments(cfg, eval_data is not None, use_cpu)
            check_optimizer(args)
            common = dict(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                          processing_class=tokenizer, **callbacks)
            if cfg.task == "sequence_classification":
                from transformers import DataCollatorWithPadding

                trainer = AuxLossTrainer(**common, data_collator=DataCollatorWithPadding(tokenizer),
                                         compute_metrics=classification_metrics(cfg.num_labels))
            else:
                trainer = AuxLossSFTTrainer(**common)
    except (ValueError, RuntimeError) as err:  # an unknown lr_scheduler or optimizer, report_to without its package
        if err.__cause__ is not None:  # a library failing inside (a module that does not import): its traceback says why
            raise
        raise _invalid_value(err) from None
    if state.is_main_process:  # everything is validated: only now is the folder taken (and an old run cleared)
        run_dir.begin(run, config)
    try:
        state.wait_for_everyone()
        if state.is_main_process:
            if peft_config is None:
                print(f"full fine-tuning: {sum(p.numel() for p in model.parameters()):,} trainable params", flush=True)
            else:
                model.print_trainable_parameters()
            if run.resume:
                print(f"resuming from {run.resume}", flush=True)
        if getattr(peft_config, "trf_task_vector_init", None) == "input_mean" and not run.resume:
            init_task_vectors_from_first_rows(trainer, cfg.micro_batch_size)
        trainer.train(resume_from_checkpoint=run.resume)
        if "ref" in getattr(model, "peft_config", {}):  # TRL's copy of the starting adapter: not part of the result
            model.delete_adapter("ref")
        _check_finite_weights(model, trainer.state.global_step)
        staging = run_dir.finishing_dir(run.out) if state.is_main_process else run.out / run_dir.FINISHING
        state.wait_for_everyone()
        trainer.save_model(str(staging))
        held_out = trainer.predict(eval_data, metric_key_prefix="eval") if (
            cfg.task == "sequence_classification" and eval_data is not None) else None
        if state.is_main_process:
            if held_out is not None:  # the metrics the papers report, on the held-out rows, after the last step
                (staging / "eval_metrics.json").write_text(json.dumps(held_out.metrics, indent=1))
                (staging / "eval_items.json").write_text(json.dumps(per_item_outcomes(held_out, cfg.num_labels)))
            (staging / RESOLVED_CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
            (staging / "train_metrics.json").write_text(json.dumps(trainer.state.log_history, indent=1))
            first_step = json.loads((Path(run.resume) / "trainer_state.json").read_text())["global_step"] if run.resume else 0
            (staging / "run_summary.json").write_text(json.dumps(run_summary(trainer, model, first_step), indent=1))
            if peft_config is not None:
                add_training_section(staging, config, trainer.state.log_history, held_out and held_out.metrics)
            run_dir.finish(run.out)
        state.wait_for_everyone()
    finally:
        if state.is_main_process:
            run_dir.release_lock(run.out)
    return run.out


def check_optimizer(args) -> None:
    """An optimizer whose package is missing fails only when training starts: ask transformers now."""
    from transformers import Trainer

    try:
        Trainer.get_optimizer_cls_and_kwargs(args)
    except ImportError as err:
        raise UserError(f"optimizer {getattr(args.optim, 'value', args.optim)}: {first_line(err)}") from None


def _check_finite_weights(model, step: int) -> None:
    """The last update can turn weights NaN after the last loss was checked: never save those as finished."""
    from .trainer import NonFiniteLoss

    bad = next((name for name, p in model.named_parameters() if p.requires_grad and not p.detach().isfinite().all()),
               None)
    if bad:
        raise NonFiniteLoss(f"training ended at step {step} with non-finite adapter weights ({bad}); nothing was "
                            "saved as finished. Lower learning_rate (or set max_grad_norm) and rerun with "
                            "overwrite_output_dir: true")


def run_summary(trainer, model, first_step: int = 0) -> dict:
    """Cost of the run: trainable parameters, seconds per optimiser step (of the steps this process ran, so a
    resumed run is not flattered), peak memory of this process."""
    import resource

    import torch

    final = trainer.state.log_history[-1] if trainer.state.log_history else {}
    steps = max(trainer.state.global_step - first_step, 1)
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux reports KiB
    return {
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "steps": trainer.state.global_step,
        "train_runtime_s": final.get("train_runtime"),
        "step_time_s": final["train_runtime"] / steps if "train_runtime" in final else None,
        "peak_memory_mb": peak / 2**20,
        "peak_memory_kind": "cuda max_memory_allocated" if torch.cuda.is_available() else "process peak RSS",
    }
