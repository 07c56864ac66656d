"""Putting a server together: the base loaded once, every adapter on it, the engine started, then uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path

from ..inference.runs import resolve_run
from ..models.loader import load_base_model
from ..models.multi_adapter import MultiAdapterModel
from ..utils.errors import UserError
from .engine import Engine
from .registry import Registry, size


def _one(values: dict[str, object], what: str, flag: str):
    if len(set(values.values())) > 1:
        listed = ", ".join(f"{name}: {value}" for name, value in values.items())
        raise UserError(f"the adapters were trained with different {what} ({listed}); one server holds one base: "
                        f"serve them separately, or pass {flag}")
    return next(iter(values.values()))


def prepare(adapters: dict[str, Path], base: str | None, load_in_4bit: bool | None, max_batch_size: int,
            max_model_len: int | None, adapter_root: Path | None, dtype: str = "auto") -> tuple[Registry, Engine, int]:
    """Every adapter checked, the base loaded once, the adapters put on it: (registry, started engine, context).
    ``dtype`` auto: bfloat16 when every adapter was trained in bf16, else float32."""
    runs = {name: resolve_run(folder, base, load_in_4bit) for name, folder in adapters.items()}
    if not runs and base is None:
        raise UserError("nothing to serve: name adapter folders (or runs), or --base MODEL to serve a base model")
    base = base or _one({name: run.base_model for name, run in runs.items()}, "base models", "--base MODEL")
    in_4bit = bool(load_in_4bit if load_in_4bit is not None else
                   runs and _one({n: r.load_in_4bit for n, r in runs.items()}, "load_in_4bit", "--load_in_4bit"))
    bf16 = dtype == "bfloat16" or (dtype == "auto" and bool(runs) and all(run.bf16 for run in runs.values()))
    if adapter_root is not None and not adapter_root.is_dir():
        raise UserError(f"--adapter-root {adapter_root}: no such folder")
    model = load_base_model(base, load_in_4bit=in_4bit, bf16=bf16).eval()
    limit = max_model_len or getattr(model.config, "max_position_embeddings", None) or 2048
    registry = Registry(MultiAdapterModel(model), base, adapter_root)
    for name, folder in adapters.items():
        registry.add(name, Path(folder))
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    adapters_bytes = sum(registry.multi.adapter_bytes(name) for name in adapters)
    kind = "4-bit" if in_4bit else "bfloat16" if bf16 else "float32"
    print(f"memory: one base ({size(base_bytes)}, {kind}) + {len(adapters)} adapters "
          f"({size(adapters_bytes)})", file=sys.stderr)
    return registry, Engine(registry.multi, max_batch_size).start(), limit


def serve(registry: Registry, engine: Engine, max_model_len: int, host: str, port: int, api_key: str | None) -> None:
    try:
        import uvicorn

        from .app import build_app
    except ImportError as err:
        raise UserError(f"plugin.serve needs FastAPI and uvicorn ({err.name} is missing): pip install "
                        "'plugin[serve]'") from None

    app = build_app(registry, engine, max_model_len, api_key)
    print(f"serving {', '.join(registry.models)} on http://{host}:{port}/v1"
          f"{' (API key required)' if api_key else ''}", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        engine.stop()
