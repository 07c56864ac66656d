"""Axolotl plugin: ``adapter: mplora | mor | loratrf`` in an Axolotl YAML.

```yaml
plugins:
  - plugin.integrations.axolotl.LoRAVariantsPlugin
adapter: mor
lora_r: 8
lora_alpha: 32
lora_target_modules: [gate_proj, up_proj, down_proj]
mor_num_experts: 8
```

The plugin registers the methods with PEFT, declares our YAML keys to Axolotl's config validation, builds our PEFT
config where Axolotl would build its LoRA config, and mixes the auxiliary losses into Axolotl's trainer.
"""

from __future__ import annotations

from typing import Literal, Optional

from axolotl.integrations.base import AdapterCapabilities, BasePlugin
from pydantic import BaseModel, Field

from ..tuners import METHODS, register


class LoRAVariantsArgs(BaseModel):
    """Our method keys (docs/methods.md fields); unset keys take the methods' defaults."""

    mplora_num_paths: Optional[int] = Field(default=None, description="MPLoRA: number of paths n (default 4)")
    mplora_orth_weight: Optional[float] = Field(default=None, description="MPLoRA: orthogonality weight (default 0.1)")
    mplora_orth_start_step: Optional[int] = Field(default=None, description="MPLoRA: first step of the loss (default 0)")
    mor_num_experts: Optional[int] = Field(default=None, description="MoR: number of experts N (default 8)")
    mor_router_aux_loss_coef: Optional[float] = Field(default=None, description="MoR: router balance loss weight (0)")
    mor_router_init_std: Optional[float] = Field(default=None, description="MoR: router init std (default 0.02)")
    loratrf_rank: Optional[int] = Field(default=None, description="LoRATRF: transform rank k (default r)")
    loratrf_mode: Optional[Literal["output", "input"]] = Field(default=None, description="LoRATRF: filter mode")


class LoRAVariantsPlugin(BasePlugin):
    """MPLoRA, MoR and LoRATRF for Axolotl."""

    def register(self, cfg: dict):
        register()

    def get_input_args(self) -> str:
        return f"{__name__}.LoRAVariantsArgs"

    def get_adapter_capabilities(self) -> list[AdapterCapabilities]:
        return [AdapterCapabilities(name=name) for name in METHODS]

    def load_adapter(self, model, cfg, inference: bool = False, config_only: bool = False):
        if cfg.adapter not in METHODS:
            return None
        from peft import PeftModel, get_peft_model

        from ..modeling import peft_config_from_keys

        config = peft_config_from_keys(dict(cfg))
        if config_only:
            return None, config
        if cfg.lora_model_dir:  # continue from / infer with a saved adapter, like Axolotl's LoRA loader
            return PeftModel.from_pretrained(model, cfg.lora_model_dir, is_trainable=not inference), config
        model = get_peft_model(model, config)
        if cfg.local_rank in (None, 0):
            model.print_trainable_parameters()
        return model, config

    def get_trainer_cls(self, cfg):
        if cfg.adapter not in METHODS:
            return None
        from axolotl.core.trainers.base import AxolotlTrainer

        from ..trainer import AuxLossMixin

        return type("AxolotlAuxLossTrainer", (AuxLossMixin, AxolotlTrainer), {})

    def add_callbacks_pre_trainer(self, cfg, model):
        if cfg.adapter not in METHODS:
            return []
        from ..telemetry import AdapterTelemetryCallback

        return [AdapterTelemetryCallback()]
