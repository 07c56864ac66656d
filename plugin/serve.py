"""``python -m plugin.serve RUN_OR_ADAPTER [...]``: an OpenAI-compatible server (chat and text completions,
streaming) for adapters of every method — MoR, LoRATRF, MPLoRA and PEFT LoRA side by side on one copy of the base,
requests for different adapters batched together. The work is ``plugin.serving``. With ``--engine vllm``, one adapter
is exported for vLLM and served by vLLM's own OpenAI server (``plugin.integrations.vllm``).

Try it:  curl http://127.0.0.1:8000/v1/models   (or any OpenAI client with base_url=http://127.0.0.1:8000/v1).
With --engine vllm, arguments after `--` go to vLLM's server as they are (e.g. -- --dtype float32 --enforce-eager)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .integrations.vllm.serve import serve_with_vllm
from .serving.server import prepare, serve
from .utils.errors import UserError, exits_cleanly_on_user_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plugin.serve", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN_OR_ADAPTER",
                   help="plugin.train output folders or adapter folders, each served under its folder's name")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                   help="an adapter served under NAME (repeatable)")
    p.add_argument("--base", help="base model (default: the adapters' own, which must agree); served under this id")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", dest="api_key", default=os.environ.get("PLUGIN_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on every endpoint but /health (default: $PLUGIN_API_KEY)")
    p.add_argument("--load_in_4bit", action="store_true", default=None, help="load the base in 4 bits (nf4)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="weights and activations (default auto: bfloat16 when every adapter was trained in bf16, else "
                        "float32; bfloat16 halves the base's memory, and is fast on GPUs and CPUs with AVX512-BF16 "
                        "or AMX); with --engine vllm: vLLM's --dtype")
    p.add_argument("--max_batch_size", type=int,
                   help="most requests generated together (default 16; with --engine vllm: vLLM's default)")
    p.add_argument("--max_model_len", type=int, help="longest prompt + completion in tokens (default: the model's)")
    p.add_argument("--adapter-root", dest="adapter_root",
                   help="allow POST /v1/load_lora_adapter for folders under this one (off without it)")
    p.add_argument("--engine", choices=["plugin", "vllm"], default="plugin",
                   help="plugin: this package's server (every adapter on one base); vllm: export the one adapter "
                        "and run vLLM's OpenAI server on it (needs vLLM: scripts/setup_vllm.sh), --max_batch_size as "
                        "--max-num-seqs")
    return p


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, vllm_args = _parser().parse_args(argv[:split]), argv[split + 1:]
    if vllm_args and args.engine != "vllm":
        raise UserError(f"arguments after -- ({' '.join(vllm_args)}) are vLLM's: they need --engine vllm")
    adapters: dict[str, Path] = {}
    named = [(Path(run).resolve().name, run) for run in args.runs]
    for spec in args.adapter:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--adapter {spec}: give it as NAME=DIR")
        named.append((name, folder))
    for name, folder in named:
        if name in adapters:
            raise UserError(f"two adapters are named {name!r}; name one with --adapter OTHER={folder}")
        adapters[name] = Path(folder)
    for flag, value in (("--max_batch_size", args.max_batch_size), ("--max_model_len", args.max_model_len),
                        ("--port", args.port)):
        if value is not None and value <= 0:
            raise UserError(f"{flag} must be > 0, got {value}")
    if args.engine == "vllm":
        if len(adapters) != 1 or args.load_in_4bit or args.adapter_root:
            raise UserError("--engine vllm serves one adapter (one RUN_OR_ADAPTER or --adapter NAME=DIR), on the "
                            "full-precision base, without --adapter-root (vLLM loads only LoRA at runtime)")
        (name, folder), = adapters.items()
        if args.dtype != "auto":
            vllm_args = ["--dtype", args.dtype, *vllm_args]
        serve_with_vllm(name, folder, args.base, args.host, args.port, args.api_key, args.max_batch_size,
                        args.max_model_len, vllm_args)
    registry, engine, max_model_len = prepare(adapters, args.base, args.load_in_4bit, args.max_batch_size or 16,
                                              args.max_model_len,
                                              Path(args.adapter_root) if args.adapter_root else None, args.dtype)
    serve(registry, engine, max_model_len, args.host, args.port, args.api_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
