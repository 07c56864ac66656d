"""``python -m plugin.serve RUN --engine vllm``: the adapter exported (``folder.py``) into a cache folder, once per
adapter version, then this process replaced by vLLM's OpenAI server on it. No vLLM import here: the server is vLLM's
own command, and the entry point registers the architecture in its processes."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from ...inference.runs import resolve_run
from ...models.embedded import cache_dir
from ...serving.vllm_env import vllm_cpu_env
from ...utils.errors import UserError
from .folder import TOKENIZER_FILES, write_folder

INSTALL = ("bash scripts/setup_vllm.sh (then .venv-vllm/bin/python -m plugin.serve ...), or pip install vllm beside "
           "this package")


def cached_folder(adapter: Path, base: str | None) -> Path:
    """The vLLM folder of ``adapter`` in the cache, written unless this version of it is there already (keyed by
    the adapter's files and the base's name)."""
    run = resolve_run(adapter, base)
    digest = hashlib.sha256(run.base_model.encode())
    for name in ("adapter_config.json", "adapter_model.safetensors", *TOKENIZER_FILES):
        if (run.folder / name).is_file():
            digest.update(name.encode() + (run.folder / name).read_bytes())
    folder = cache_dir("vllm") / f"{run.folder.resolve().name}-{digest.hexdigest()[:16]}"
    if not (folder / "config.json").is_file():
        print(f"exporting {run.folder} for vLLM into {folder} (once)", file=sys.stderr, flush=True)
        write_folder(run.folder, folder, base, overwrite=True)
    return folder


def server_command(folder: Path, name: str, host: str, port: int, api_key: str | None, max_num_seqs: int | None,
                   max_model_len: int | None, extra: list[str]) -> list[str]:
    """vLLM's OpenAI server (its module: the ``vllm`` console script fails under vllm-cpu) with plugin.serve's
    flags, then ``extra`` (vLLM's own)."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--served-model-name", name, "--host", host, "--port", str(port)]
    command += ["--max-num-seqs", str(max_num_seqs)] if max_num_seqs else []
    command += ["--api-key", api_key] if api_key else []
    command += ["--max-model-len", str(max_model_len)] if max_model_len else []
    return command + extra


def serve_with_vllm(name: str, adapter: Path, base: str | None, host: str, port: int, api_key: str | None,
                    max_num_seqs: int | None, max_model_len: int | None, extra: list[str]) -> None:
    """Export, then exec vLLM's server with ``extra`` arguments of its own (does not return)."""
    if importlib.util.find_spec("vllm") is None:
        raise UserError(f"--engine vllm needs vLLM importable by {sys.executable}: {INSTALL}")
    folder = cached_folder(adapter, base)
    env = {**vllm_cpu_env(), **os.environ}
    command = server_command(folder, name, host, port, api_key, max_num_seqs, max_model_len, extra)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)
