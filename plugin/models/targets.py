"""Which layers of a loaded model an adapter can wrap, and checks that the YAML's targets name some (PEFT would
silently ignore a modules_to_save entry that names nothing)."""

from __future__ import annotations

import re

from torch import nn

from ..config.peft_mapping import ALL_LINEAR
from ..tuners.base import in_out_features
from ..utils.errors import UserError


def linear_layer_names(model: nn.Module) -> set[str]:
    """Short names (last path component) of every layer an adapter can wrap."""
    names = set()
    for full_name, module in model.named_modules():
        try:
            in_out_features(module)
        except TypeError:
            continue
        names.add(full_name.rsplit(".", 1)[-1])
    return names


def check_modules_to_save(model: nn.Module, names: list[str] | None) -> None:
    """PEFT silently ignores a modules_to_save entry that names nothing: the user expects that module trained."""
    module_names = [n for n, _ in model.named_modules()]
    for name in names or []:
        if not any(n == name or n.endswith("." + name) for n in module_names):
            tops = sorted({n.rsplit(".", 1)[-1] for n in module_names if n and "layers" not in n})
            raise UserError(f"lora_modules_to_save: '{name}' matches no module of this model; e.g. {', '.join(tops[:8])}")


def check_target_modules(model: nn.Module, targets: list[str] | None) -> None:
    if not targets:
        return
    module_names = [n for n, _ in model.named_modules()]
    adaptable = linear_layer_names(model)
    for target in targets:
        if target in ALL_LINEAR:
            continue
        matches = [n for n in module_names if n == target or n.endswith("." + target) or re.fullmatch(target, n)]
        if not matches:
            raise UserError(
                f"lora_target_modules: '{target}' matches no layer of this model; "
                f"its linear layers are: {', '.join(sorted(adaptable))}"
            )
        bad = [n for n in matches if n.rsplit(".", 1)[-1] not in adaptable]
        if bad:
            raise UserError(f"lora_target_modules: '{target}' matches {bad[0]}, which is not a linear layer")
