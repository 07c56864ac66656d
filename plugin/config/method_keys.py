"""The YAML's method keys, derived from the registered tuners' configs.

A method declares its settings once, as fields of its ``tuners/<name>/config.py`` (type, default, help,
validation); the YAML key is ``<name>_<field>`` with the config's own field prefix left out (LoRATRF's
``trf_rank`` -> ``loratrf_rank``). The schema, ``--help``, the docs and the Axolotl plugin's arguments all read this.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..tuners import METHODS
from ..tuners.base import LowRankConfig


@dataclass(frozen=True)
class MethodKey:
    method: str
    field: str  # the tuner config's field
    type: Any
    default: Any
    help: str


def method_keys() -> Mapping[str, MethodKey]:
    """Every registered method's YAML keys, in registration order (read-only). Derived once per state of the
    registry: loading one YAML asks for them for every key it checks."""
    return _derive(tuple(METHODS.items()))


@functools.cache
def _derive(methods: tuple) -> Mapping[str, MethodKey]:
    shared = {f.name for f in dataclasses.fields(LowRankConfig)}
    keys = {}
    for method, (config_cls, _) in methods:
        hints = typing.get_type_hints(config_cls)
        for f in dataclasses.fields(config_cls):
            if f.name in shared:
                continue
            key = f"{method}_{f.name.removeprefix(config_cls._field_prefix)}"
            keys[key] = MethodKey(method, f.name, hints[f.name], f.default, f.metadata.get("help", ""))
    return MappingProxyType(keys)
