"""The training YAML: its schema (every key with type, default and help), the method keys derived from the tuners'
configs, Axolotl / LLaMA-Factory names, and loading with validation before anything heavy starts."""

from .loader import load_config, parse_override, to_dict
from .schema import DatasetSpec, EvalSpec, TrainConfig

__all__ = ["DatasetSpec", "EvalSpec", "TrainConfig", "load_config", "parse_override", "to_dict"]
