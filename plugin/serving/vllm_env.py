"""The environment vLLM for CPU runs our adapters best in: what ``plugin.serve --engine vllm`` sets where the user sets
nothing, and what ``plugin.bench --serve --engine vllm`` starts its vLLM servers with. No vLLM import."""

from __future__ import annotations

import os


def vllm_cpu_env() -> dict[str, str]:
    """vLLM for CPU's settings (ignored on a GPU) where the environment sets none: a 1 GiB KV cache; on a few cores no
    thread pinning (the automatic binding keeps a core back) and MKL told its thread count, one per usable core, as
    vLLM's OpenMP runs. Left unset, MKL sized its teams itself and the adapters' small matmuls between vLLM's big ones
    ran 1.3x slower at 16 clients on 2 cores; held at one thread, every matmul of the base ran on one core (1.5x slower
    at 64 clients, 2048 wide). docs/benchmarks.md has the figures."""
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    # the cores this process may run on (a container's or taskset's share); macOS and Windows lack the call
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores <= 4:
        env.update(VLLM_CPU_OMP_THREADS_BIND="nobind", MKL_NUM_THREADS=str(cores))
    return env
