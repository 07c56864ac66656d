"""The rl: stages: TRL's preference and online-RL trainers with the adapters' auxiliary losses, and their configs
from the YAML.

dpo and ipo run TRL's DPOTrainer (loss_type sigmoid / ipo, with an NLL term on the chosen answers at rpo_alpha),
kto its KTOTrainer, orpo and simpo the experimental ORPO and CPO trainers (no reference model), grpo its
GRPOTrainer (its RLOOTrainer with trl.advantage_estimator: rloo), rm its RewardTrainer. The reference of DPO, IPO,
KTO and GRPO is the base with the adapters disabled: the trainers get the base and the PEFT config, so TRL makes no
second copy of the adapter.
"""

from __future__ import annotations

import warnings

from trl import (DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, KTOConfig, KTOTrainer, RewardConfig, RewardTrainer,
                 RLOOConfig, RLOOTrainer)

with warnings.catch_warnings():  # TRL warns on every import of its experimental trainers
    warnings.simplefilter("ignore")
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

from ..config import TrainConfig
from ..utils.imports import import_object
from .arguments import common_arguments
from .trainer import AuxLossMixin


class EvalModeGeneration:
    """GRPO and RLOO sample completions with the model in train mode, where the adapters take their uncached training
    path and record auxiliary terms at every decoded token: sample in eval mode (the adapters' inference path, nothing
    recorded), then train on."""

    def _generate_single_turn(self, *args, **kwargs):
        was_training = self.model.training
        self.model.eval()
        try:
            return super()._generate_single_turn(*args, **kwargs)
        finally:
            self.model.train(was_training)


class AuxLossDPOTrainer(AuxLossMixin, DPOTrainer):
    """TRL's DPOTrainer (DPO, IPO, RPO) with the adapters' auxiliary losses."""


class AuxLossKTOTrainer(AuxLossMixin, KTOTrainer):
    """TRL's KTOTrainer with the adapters' auxiliary losses."""


class AuxLossORPOTrainer(AuxLossMixin, ORPOTrainer):
    """TRL's (experimental) ORPOTrainer with the adapters' auxiliary losses."""


class AuxLossCPOTrainer(AuxLossMixin, CPOTrainer):
    """TRL's (experimental) CPOTrainer (CPO, SimPO) with the adapters' auxiliary losses."""


class AuxLossRewardTrainer(AuxLossMixin, RewardTrainer):
    """TRL's RewardTrainer (a one-score head, Bradley-Terry on chosen over rejected) with the auxiliary losses."""


class AuxLossGRPOTrainer(EvalModeGeneration, AuxLossMixin, GRPOTrainer):
    """TRL's GRPOTrainer with the adapters' auxiliary losses, sampling through the adapters' inference path."""


class AuxLossRLOOTrainer(EvalModeGeneration, AuxLossMixin, RLOOTrainer):
    """TRL's RLOOTrainer with the adapters' auxiliary losses, sampling through the adapters' inference path."""


TRAINERS = {"dpo": AuxLossDPOTrainer, "ipo": AuxLossDPOTrainer, "kto": AuxLossKTOTrainer,
            "orpo": AuxLossORPOTrainer, "simpo": AuxLossCPOTrainer, "grpo": AuxLossGRPOTrainer,
            "rm": AuxLossRewardTrainer}


def _dpo_losses(cfg: TrainConfig, loss: str) -> dict:
    if not cfg.rpo_alpha:
        return {"loss_type": [loss]}
    return {"loss_type": [loss, "sft"], "loss_weights": [1.0, cfg.rpo_alpha]}  # RPO: + alpha * NLL(chosen)


def preference_arguments(cfg: TrainConfig, has_eval: bool, use_cpu: bool):
    """The stage's TRL config: the shared TrainingArguments fields plus the stage's own keys."""
    common = common_arguments(cfg, has_eval, use_cpu)
    beta = {} if cfg.rl_beta is None else {"beta": cfg.rl_beta}
    if cfg.rl in ("dpo", "ipo"):
        return DPOConfig(**common, **beta, **_dpo_losses(cfg, "sigmoid" if cfg.rl == "dpo" else "ipo"),
                         label_smoothing=cfg.dpo_label_smoothing, max_length=cfg.sequence_len)
    if cfg.rl == "kto":  # each row's KL completion is another row of its batch: KTO reads them in order
        common["train_sampling_strategy"] = "sequential"
        return KTOConfig(**common, **beta, desirable_weight=cfg.kto_desirable_weight,
                         undesirable_weight=cfg.kto_undesirable_weight, max_length=cfg.sequence_len)
    if cfg.rl == "orpo":  # TRL's beta is ORPO's lambda
        return ORPOConfig(**common, beta=cfg.orpo_alpha, max_length=cfg.sequence_len)
    if cfg.rl == "simpo":
        return CPOConfig(**common, **beta, loss_type="simpo", simpo_gamma=cfg.simpo_gamma, cpo_alpha=cfg.cpo_alpha,
                         max_length=cfg.sequence_len)
    if cfg.rl == "rm":
        return RewardConfig(**common, max_length=cfg.sequence_len)
    trl = cfg.trl
    kl = trl.beta if trl.beta is not None else cfg.rl_beta if cfg.rl_beta is not None else 0.0
    online = dict(**common, beta=kl, num_generations=trl.num_generations,
                  max_completion_length=trl.max_completion_length, temperature=trl.temperature, top_p=trl.top_p,
                  top_k=trl.top_k, epsilon=trl.epsilon, reward_weights=trl.reward_weights)
    if trl.advantage_estimator == "rloo":
        return RLOOConfig(**online)
    grpo_only = {k: getattr(trl, k) for k in ("loss_type", "scale_rewards") if getattr(trl, k) is not None}
    return GRPOConfig(**online, **grpo_only)


def preference_trainer(cfg: TrainConfig, base_model, peft_config, args, train_data, eval_data, tokenizer, **common):
    """The stage's trainer over the base model and the PEFT config (TRL adds the adapter: no reference copy)."""
    kwargs = dict(model=base_model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                  processing_class=tokenizer, peft_config=peft_config, **common)
    if cfg.rl == "grpo":
        kwargs["reward_funcs"] = [import_object(path, "trl.reward_funcs") for path in cfg.trl.reward_funcs]
    rloo = cfg.rl == "grpo" and cfg.trl.advantage_estimator == "rloo"
    return (AuxLossRLOOTrainer if rloo else TRAINERS[cfg.rl])(**kwargs)
