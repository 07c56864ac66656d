"""MPLoRA, MoR and LoRATRF as PEFT methods, with a TRL trainer, a YAML CLI and an lm-eval bridge.

``import plugin`` registers the three methods with PEFT, so ``get_peft_model``, ``save_pretrained`` and
``PeftModel.from_pretrained`` work with ``plugin.MPLoraConfig``, ``plugin.MoRConfig`` and ``plugin.LoRATRFConfig``.
"""

from .auxiliary import aux_loss_terms, router_weights, weighted_aux_loss
from .tuners import LoRATRFConfig, MoRConfig, MPLoraConfig, register

register()

__version__ = "0.1.0"
__all__ = [
    "LoRATRFConfig",
    "MPLoraConfig",
    "MoRConfig",
    "aux_loss_terms",
    "register",
    "router_weights",
    "weighted_aux_loss",
]
