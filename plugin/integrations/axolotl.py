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
``axolotl merge-lora`` merges MPLoRA through PEFT (Axolotl's default shard-by-shard merge knows only ``lora_A`` /
``lora_B`` tensors and would save the base unchanged) and refuses MoR / LoRATRF, which are no weight delta.
"""

from __future__ import annotations

import sys
from typing import Optional

from axolotl.integrations.base import AdapterCapabilities, BasePlugin
from pydantic import BaseModel, Field, create_model

from ..config.method_keys import method_keys
from ..config.peer_keys import REENTRANT_SWITCHED
from ..inference.export import MERGEABLE, NOT_A_DELTA, WHY
from ..tuners import METHODS, register


def _args_model() -> type[BaseModel]:
    """Our method keys for Axolotl's config validation, derived from the tuners' configs (plugin.config.method_keys):
    each optional, unset keys take the methods' defaults."""
    fields = {key: (Optional[spec.type], Field(default=None, description=f"{spec.help} (default {spec.default})"))
              for key, spec in method_keys().items()}
    return create_model("LoRAVariantsArgs", __doc__="Our method keys (docs/configuration.md, method).", **fields)


LoRAVariantsArgs = _args_model()


class LoRAVariantsPlugin(BasePlugin):
    """MPLoRA, MoR and LoRATRF for Axolotl."""

    def register(self, cfg: dict):
        register()
        adapter = cfg.get("adapter")
        if adapter not in METHODS:
            return
        # called on the user's YAML before Axolotl normalises it: Axolotl would default to reentrant checkpointing,
        # which runs the forward (where our auxiliary losses are computed) without gradients
        if cfg.get("gradient_checkpointing"):
            kwargs = cfg.get("gradient_checkpointing_kwargs") or {}
            if kwargs.get("use_reentrant"):
                print(REENTRANT_SWITCHED, file=sys.stderr)
            cfg["gradient_checkpointing_kwargs"] = {**kwargs, "use_reentrant": False}
        if cfg.get("rl"):  # Axolotl's RL builder takes a plugin's trainer class without its arguments (model, ref)
            _refuse(f"rl: {cfg['rl']} with adapter: {adapter} under axolotl: Axolotl's preference trainers would drop "
                    "the adapter's auxiliary losses; run the same YAML with python -m plugin.train (docs/preference.md)")
        if cfg.get("merge_lora"):  # set by `axolotl merge-lora`
            if adapter.upper() not in MERGEABLE:
                _refuse(NOT_A_DELTA.format(method=adapter.upper(), why=WHY[adapter.upper()]))
            if cfg.get("merge_method") != "legacy":
                print(f"note: {adapter} is merged with PEFT's merge_and_unload (Axolotl's merge_method: legacy); "
                      "the memory-efficient merge reads only LoRA tensors", file=sys.stderr)
                cfg["merge_method"] = "legacy"

    def get_input_args(self) -> str:
        return f"{__name__}.LoRAVariantsArgs"

    def get_adapter_capabilities(self) -> list[AdapterCapabilities]:
        return [AdapterCapabilities(name=name) for name in METHODS]

    def load_adapter(self, model, cfg, inference: bool = False, config_only: bool = False):
        if cfg.adapter not in METHODS:
            return None
        from peft import PeftModel, get_peft_model

        from ..config.peft_mapping import peft_config_from_keys

        config = peft_config_from_keys(dict(cfg))
        if config_only:
            return None, config
        if cfg.lora_model_dir:  # continue from / infer with a saved adapter, like Axolotl's LoRA loader
            model = PeftModel.from_pretrained(model, cfg.lora_model_dir, is_trainable=not inference)
            print(f"loaded the {cfg.adapter} adapter from {cfg.lora_model_dir}", file=sys.stderr)
            return model, config
        model = get_peft_model(model, config)
        if cfg.local_rank in (None, 0):
            model.print_trainable_parameters()
        return model, config

    def get_trainer_cls(self, cfg):
        if cfg.adapter not in METHODS:
            return None
        from axolotl.core.trainers.base import AxolotlTrainer

        from ..training.trainer import AuxLossMixin

        return type("AxolotlAuxLossTrainer", (AuxLossMixin, AxolotlTrainer), {})

    def post_trainer_create(self, cfg, trainer):
        # where plugin.train does it: before the first step, unless the run resumes (its checkpoint holds t)
        if cfg.adapter == "loratrf" and cfg.loratrf_task_vector_init == "input_mean" and not cfg.resume_from_checkpoint:
            from ..training.trainer import init_task_vectors_from_first_rows

            init_task_vectors_from_first_rows(trainer, cfg.micro_batch_size)

    def add_callbacks_pre_trainer(self, cfg, model):
        if cfg.adapter not in METHODS:
            return []
        from ..training.telemetry import AdapterTelemetryCallback

        return [AdapterTelemetryCallback()]


def _refuse(message: str) -> None:
    """Stop Axolotl's command with our one ``error:`` line (a plugin hook has no other way than an exception, which
    Axolotl prints as a traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
