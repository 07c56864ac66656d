"""The three tuners and their registration with PEFT."""

from __future__ import annotations

from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method
from peft.utils.peft_types import PeftType

from .loratrf import LoRATRFConfig, LoRATRFModel
from .mor import MoRConfig, MoRModel
from .mplora import MPLoraConfig, MPLoraModel

# name (lower case, as PEFT wants it) -> (config, model); the PeftType member is the upper-case name
METHODS = {
    "mplora": (MPLoraConfig, MPLoraModel),
    "mor": (MoRConfig, MoRModel),
    "loratrf": (LoRATRFConfig, LoRATRFModel),
}


def current_key(key: str) -> str:
    """A saved adapter's key as this release names it: 0.1.0 stored MoR's Omegas and LoRATRF's task vector as bare
    parameters, now they are their modules' ``weight`` (the layers rename them when loading)."""
    legacy = {name for _, model_cls in METHODS.values() for name in model_cls.tuner_layer_cls.legacy_parameter_dicts}
    return f"{key}.weight" if key.rsplit(".", 1)[-1] in legacy else key


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


def register() -> None:
    """Register the three methods with PEFT; safe to call more than once."""
    for name, (config_cls, model_cls) in METHODS.items():
        _add_peft_type(name.upper())
        if PeftType[name.upper()] not in PEFT_TYPE_TO_TUNER_MAPPING:
            register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls, prefix=model_cls.prefix)

__all__ = ["LoRATRFConfig", "METHODS", "MPLoraConfig", "MoRConfig", "current_key", "register"]
