"""MPLoRA, MoR and LoRATRF as PEFT methods, with a TRL trainer, a YAML CLI and an lm-eval bridge.

``import plugin`` registers the three methods with PEFT, so ``get_peft_model``, ``save_pretrained`` and
``PeftModel.from_pretrained`` work with ``plugin.MPLoraConfig``, ``plugin.MoRConfig`` and ``plugin.LoRATRFConfig``.
"""

import logging

# bitsandbytes logs a warning on every import on CPUs with AVX512-BF16 when its optional hub kernel package is
# absent (it falls back to its own kernel); it is noise for every command here, so keep only its errors
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from .tuners.auxiliary import aux_loss_terms, router_weights, weighted_aux_loss  # noqa: E402
from .tuners import LoRATRFConfig, MoRConfig, MPLoraConfig, register  # noqa: E402
from .tuners.loratrf import init_task_vectors  # noqa: E402
from .models.hotswap import hotswap_adapter  # noqa: E402

register()

# TRL's trainers with the adapters' auxiliary losses, imported on first use (they import TRL's trainers)
TRAINERS = {"SFTTrainer": "trainer.AuxLossSFTTrainer", "DPOTrainer": "preference.AuxLossDPOTrainer",
            "KTOTrainer": "preference.AuxLossKTOTrainer", "ORPOTrainer": "preference.AuxLossORPOTrainer",
            "CPOTrainer": "preference.AuxLossCPOTrainer", "GRPOTrainer": "preference.AuxLossGRPOTrainer",
            "RLOOTrainer": "preference.AuxLossRLOOTrainer", "RewardTrainer": "preference.AuxLossRewardTrainer"}


def __getattr__(name: str):
    if name not in TRAINERS:
        raise AttributeError(f"module 'plugin' has no attribute {name!r}")
    import importlib

    module, cls = TRAINERS[name].split(".")
    return getattr(importlib.import_module(f".training.{module}", __name__), cls)

__version__ = "0.1.0"
__all__ = [
    *TRAINERS,
    "LoRATRFConfig",
    "MPLoraConfig",
    "MoRConfig",
    "aux_loss_terms",
    "hotswap_adapter",
    "init_task_vectors",
    "register",
    "router_weights",
    "weighted_aux_loss",
]
