"""The tuners (PEFT methods) and their registry.

Adding a method: a ``tuners/<name>/`` folder (config, layer, model over ``base``) and one ``register_method`` line
below. Its YAML keys, ``--help``, the docs, the YAML -> PEFT mapping and the Axolotl plugin's arguments are derived
from its config (``plugin.config.method_keys``).
"""

from __future__ import annotations

from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method
from peft.utils.peft_types import PeftType

from .loratrf import LoRATRFConfig, LoRATRFModel
from .mor import MoRConfig, MoRModel
from .mplora import MPLoraConfig, MPLoraModel

# name (lower case, as PEFT wants it) -> (config, model); the PeftType member is the upper-case name
METHODS: dict[str, tuple[type, type]] = {}


def _add_peft_type(name: str) -> None:
    """Add a member to PEFT's closed ``PeftType`` enum (register_peft_method refuses names it lacks)."""
    if name in PeftType.__members__:
        return
    member = str.__new__(PeftType, name)
    member._name_ = member._value_ = name
    PeftType._member_names_.append(name)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    type.__setattr__(PeftType, name, member)  # Enum's __setattr__ forbids setting members


def _register_with_peft(name: str, config_cls: type, model_cls: type) -> None:
    _add_peft_type(name.upper())
    if PeftType[name.upper()] not in PEFT_TYPE_TO_TUNER_MAPPING:
        register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls, prefix=model_cls.prefix)


def register_method(name: str, config_cls: type, model_cls: type) -> None:
    """Make ``name`` a method of this package (``adapter: name``) and of PEFT; safe to call more than once."""
    METHODS[name] = (config_cls, model_cls)
    config_cls._layer_cls = model_cls.tuner_layer_cls
    _register_with_peft(name, config_cls, model_cls)


def register() -> None:
    """Register every method with PEFT; safe to call more than once."""
    for name, (config_cls, model_cls) in METHODS.items():
        _register_with_peft(name, config_cls, model_cls)


register_method("mplora", MPLoraConfig, MPLoraModel)
register_method("mor", MoRConfig, MoRModel)
register_method("loratrf", LoRATRFConfig, LoRATRFModel)

__all__ = ["LoRATRFConfig", "METHODS", "MPLoraConfig", "MoRConfig", "register", "register_method"]
