"""Auxiliary losses (MPLoRA orthogonality, MoR router balance) for TRL's SFTTrainer and any transformers Trainer."""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from transformers import Trainer
from trl import SFTTrainer

from ..tuners.auxiliary import weighted_aux_loss
from ..utils.errors import UserError


class NonFiniteLoss(UserError):
    """Training diverged: a run whose loss is NaN or infinite must not end as a finished adapter."""


class AuxLossMixin:
    """Adds each adapter's weighted auxiliary loss to the task loss and logs every term by name.

    Scaling follows the Trainer's own contract (``training_step``): where it leaves gradient accumulation to the loss
    (``loss_is_scaled_for_ga``, as GRPO sets it; else a model taking ``num_items_in_batch``, or a
    ``compute_loss_func``) the term is divided by the accumulation steps; otherwise the Trainer divides the whole
    loss. Either way the auxiliary gradient counts once per optimiser step, for SFT and every preference trainer. DDP, FSDP and ZeRO-3 average
    gradients over processes: MPLoRA's weight-only term is the same in every process, and MoR's balance loss, like
    under gradient accumulation, is each micro-batch's own statistic (tests/test_engines.py, tests/test_train.py).
    Mix it in before a ``transformers.Trainer`` subclass (see ``AuxLossSFTTrainer``, the Axolotl plugin).
    """

    def __init__(self, *args, offload_activations: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.offload_activations = offload_activations  # Axolotl's gradient_checkpointing: offload

    def training_step(self, *args, **kwargs):
        if not self.offload_activations:
            return super().training_step(*args, **kwargs)
        # the activations autograd keeps for backward wait in CPU memory instead of the accelerator's
        with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
            return super().training_step(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # pass return_outputs through: asking TRL for outputs costs an extra forward pass
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = result[0] if return_outputs else result
        if model.training:
            aux, terms = weighted_aux_loss(self.accelerator.unwrap_model(model), self.state.global_step)
            self._stop_if_not_finite(loss, terms)
            if aux is not None:
                steps = self.current_gradient_accumulation_steps if self._loss_scaled_for_ga(num_items_in_batch) else 1
                loss = loss + aux.to(loss.device) / steps
            if not hasattr(self, "_aux_terms"):
                self._aux_terms = defaultdict(list)
            for term, value in terms.items():
                self._aux_terms[term].append(value)
        return (loss, result[1]) if return_outputs else loss

    def _loss_scaled_for_ga(self, num_items_in_batch) -> bool:
        """transformers' rule in ``training_step`` for whether the loss comes scaled (then it does not divide it);
        ``loss_is_scaled_for_ga`` is transformers >= 5.19's, the rest also older versions' (Axolotl's stack)."""
        flag = getattr(self, "loss_is_scaled_for_ga", None)
        if flag is not None:
            return flag
        return bool(self.model_accepts_loss_kwargs and num_items_in_batch is not None) or \
            self.compute_loss_func is not None

    def _stop_if_not_finite(self, task_loss, aux_terms: dict) -> None:
        bad = [name for name, value in (("task loss", float(task_loss.detach())), *aux_terms.items())
               if not math.isfinite(value)]
        if bad:
            raise NonFiniteLoss(
                f"training stopped at step {self.state.global_step + 1}: the {bad[0]} is not finite (NaN or inf); "
                "nothing was saved as finished. Lower learning_rate (or set max_grad_norm), then rerun: the run "
                "resumes from its last checkpoint, or set overwrite_output_dir: true to start over"
            )

    def log(self, logs: dict, *args, **kwargs) -> None:
        terms = getattr(self, "_aux_terms", None)
        if terms and "loss" in logs:  # a training log: the mean of each term since the last one
            logs.update({term: sum(values) / len(values) for term, values in terms.items()})
            terms.clear()
        super().log(logs, *args, **kwargs)


def init_task_vectors_from_first_rows(trainer, rows: int) -> None:
    """LoRATRF's ``input_mean`` task vectors from the first ``rows`` training rows in dataset order: the same rows in
    every process, so each process sets the same vectors without communicating."""
    from ..tuners.loratrf import init_task_vectors

    data = trainer.train_dataset
    batch = trainer.data_collator([data[i] for i in range(min(rows, len(data)))])
    device = next(trainer.model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    count = init_task_vectors(trainer.model, inputs)
    if trainer.is_world_process_zero():
        print(f"LoRATRF: {count} task vectors set to the mean gate input of the first {len(inputs['input_ids'])} rows",
              flush=True)


class AuxLossSFTTrainer(AuxLossMixin, SFTTrainer):
    """TRL's SFTTrainer with the adapters' auxiliary losses."""


class AuxLossTrainer(AuxLossMixin, Trainer):
    """transformers' Trainer with the adapters' auxiliary losses (task: sequence_classification)."""
