"""The user's own functions named in a YAML (Axolotl's spelling ``module.function``, or ``module:function``):
reward functions and dataset transforms."""

from __future__ import annotations

import importlib
import os
import sys

from .errors import UserError


def import_object(path: str, key: str):
    """The function ``path`` names, from the folder the run is launched in (as Axolotl finds them) or PYTHONPATH;
    ``key``: the YAML key that named it, for the one-line error."""
    module, _, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the launch folder, as under python -m (plugin-train)
        sys.path.append(os.getcwd())
    try:
        function = getattr(importlib.import_module(module), name) if module else None
    except ImportError as err:
        raise UserError(f"{key}: {path}: cannot import {module} ({err}); give module.function with the module in "
                        "the folder you launch from or on PYTHONPATH") from None
    except AttributeError:
        function = None
    if not callable(function):
        raise UserError(f"{key}: {path} is not a function; give module.function")
    return function
