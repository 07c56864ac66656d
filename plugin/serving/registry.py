"""What the server serves: the base model under its own id and each adapter under its name, with the tokenizer each
was trained with (a run folder's own, holding its chat template, else the base's)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..models.loader import load_tokenizer
from ..models.multi_adapter import BASE, MultiAdapterModel
from ..utils.errors import UserError
from .protocol import APIError


@dataclass
class Served:
    id: str
    adapter: str  # the name rows are routed by: an adapter name or "__base__"
    tokenizer: object
    parent: str | None
    created: int
    path: str | None = None


class Registry:
    def __init__(self, multi: MultiAdapterModel, base_id: str, adapter_root: Path | None = None) -> None:
        self.multi = multi
        self.base_id = base_id
        self.adapter_root = adapter_root.resolve() if adapter_root else None
        self.models: dict[str, Served] = {base_id: Served(base_id, BASE, load_tokenizer(base_id), None, int(time.time()))}

    def get(self, model_id: str) -> Served:
        served = self.models.get(model_id)
        if served is None:
            raise APIError(404, f"The model `{model_id}` does not exist. Served: {', '.join(self.models)}", "model",
                           code="model_not_found")
        return served

    def add(self, name: str, folder: Path) -> Served:
        """Load an adapter (UserError when it does not fit); its tokenizer is the folder's if it saved one."""
        if name in self.models:
            raise UserError(f"a model named {name!r} is already served; pick another name")
        own_tokenizer = (folder / "tokenizer_config.json").is_file()
        tokenizer = load_tokenizer(str(folder)) if own_tokenizer else self.models[self.base_id].tokenizer
        if tokenizer.get_vocab() != self.models[self.base_id].tokenizer.get_vocab():
            raise UserError(f"adapter {folder} was trained with another vocabulary than {self.base_id}'s; serve it on "
                            "its own base")
        self.multi.add(name, folder)
        served = self.models[name] = Served(name, name, tokenizer, self.base_id, int(time.time()), str(folder))
        print(f"serving adapter {name} ({self.multi.adapters[name]}, {size(self.multi.adapter_bytes(name))}) from "
              f"{folder}", file=sys.stderr)
        return served

    def remove(self, name: str) -> None:
        if name == self.base_id:
            raise APIError(400, "the base model cannot be unloaded", "lora_name")
        if name not in self.models:
            raise APIError(404, f"no adapter named {name!r} is loaded", "lora_name", code="model_not_found")
        del self.models[name]
        self.multi.remove(name)

    def allowed_folder(self, path: str) -> Path:
        """A folder named by a request: only inside --adapter-root (symbolic links resolved first)."""
        if self.adapter_root is None:
            raise APIError(403, "loading adapters at runtime is off; start the server with --adapter-root DIR",
                           "lora_path")
        folder = (self.adapter_root / path).resolve()
        if not folder.is_relative_to(self.adapter_root):
            raise APIError(403, "lora_path must be inside the server's --adapter-root", "lora_path")
        if not (folder / "adapter_config.json").is_file():
            raise APIError(400, f"no adapter at {path} (no adapter_config.json)", "lora_path")
        return folder


def size(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:.1f} KiB"
