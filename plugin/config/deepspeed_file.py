"""``deepspeed:`` in a training YAML, as Axolotl, LLaMA-Factory and the HF Trainer take it: a JSON file or an inline
mapping, handed to ``TrainingArguments.deepspeed`` (whose integration fills the ``"auto"`` values from the YAML).

A relative path is read from the working directory. The names the peers' published examples use
(``deepspeed_configs/zero3.json``, ``examples/deepspeed/ds_z3_config.json``, ...) fall back to the verbatim copies
in ``plugin/config/deepspeed/`` when no such file is there, so those examples run unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..utils.errors import UserError, first_line

SHIPPED = Path(__file__).with_name("deepspeed")


def resolve_deepspeed(value: str | dict | None) -> str | dict | None:
    """The file (or mapping) to hand to the Trainer; checked to be readable JSON before anything loads."""
    if value is None or isinstance(value, dict):
        return value
    path = Path(value)
    if not path.is_file():
        shipped = SHIPPED / path.name
        if not shipped.is_file():
            names = ", ".join(sorted(p.name for p in SHIPPED.glob("*.json")))
            raise UserError(f"deepspeed: {value}: no such file (a relative path is read from {Path.cwd()}); give a "
                            f"DeepSpeed JSON, a mapping, or one of the shipped peers' files: {names}")
        if os.environ.get("RANK", "0") == "0":  # said once, not by every process of the launch
            print(f"note: deepspeed: {value} is not in {Path.cwd()}; using the copy of it this package ships "
                  f"({shipped})", file=sys.stderr)
        path = shipped
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"deepspeed: {path} is not readable JSON: {first_line(err)}") from None
    if not isinstance(config, dict):
        raise UserError(f"deepspeed: {path} must hold a JSON object")
    return str(path)
