"""``python -m plugin.bench --serve``: throughput and latency of ``plugin.serve`` under concurrent clients, as ratios
in the same run —
(a) MoR and LoRATRF adapters against a PEFT LoRA adapter served the same way,
(b) our server serving the base model against ``transformers serve`` on the same model and load,
(c) clients spread over three adapters of different methods against all on one adapter;
with ``--engine vllm`` instead: (v) MoR and LoRATRF exported for vLLM (``plugin.export --vllm``) and MPLoRA as LoRA
(``--as-lora``, vLLM's own multi-LoRA) against the base, each on its own vLLM server (float32; eager, the setting
the vLLM tests check token for token, or with ``--vllm_compiled`` vLLM's default compiled graphs), then the base and the same three adapters on one ``plugin.serve`` (float32),
every row as a ratio to vLLM's base.

The servers are the real commands in their own processes; each client sends its requests one after another over
HTTP (``/v1/completions``, greedy). In (a) and (c) ``ignore_eos`` makes every request generate exactly its
``--serve_tokens``; in (b) both servers stop at EOS as usual (they answer the same greedy text).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from ..serving.vllm_env import vllm_cpu_env
from ..utils.errors import UserError

PROMPTS = ["The capital of France is", "Write a short poem about the sea.", "Explain why the sky is blue.",
           "List three uses of a paperclip:", "Once upon a time, in a small village,", "The best way to learn is"]
ADAPTER_METHODS = ("lora", "mor", "loratrf")
VLLM_METHODS = ("mor", "loratrf", "mplora")


def make_adapters(model_dir: str, folder: Path, rank: int, experts: int,
                  methods: tuple[str, ...] = ADAPTER_METHODS) -> dict[str, Path]:
    """A random (non-identity) adapter of each method on ``model_dir``, on its attention and MLP projections."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ..tuners import LoRATRFConfig, MoRConfig, MPLoraConfig

    targets = ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
    configs = {"lora": LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False),
               "mor": MoRConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, num_experts=experts,
                                init_weights=False),
               "loratrf": LoRATRFConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_weights=False),
               "mplora": MPLoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_weights=False)}
    out = {}
    for name in methods:
        config = configs[name]
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
        for p in model.parameters():
            if p.requires_grad:  # small, so the answers stay text-like
                p.data.mul_(0.1)
        model.save_pretrained(folder / name)
        out[name] = folder / name
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(command: list[str], port: int, env: dict | None = None, start_s: int = 300):
    """A server process on ``port`` (healthy within ``start_s`` seconds), until the block ends."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            env={**(env or os.environ), "PLUGIN_API_KEY": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + start_s
        while True:
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                raise UserError(f"{' '.join(command[:4])} did not start: {log.read()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as reply:
        return json.loads(reply.read())


def load(url: str, models: list[str], clients: int, requests: int, tokens: int, ignore_eos: bool) -> dict:
    """``clients`` threads, client i asking ``models[i % len(models)]``; tokens/s over the wall time, latencies."""
    latencies, generated, texts = [], [], {}
    extra = {"ignore_eos": True} if ignore_eos else {}
    _post(url, {"model": models[0], "prompt": PROMPTS[0], "max_tokens": 2, "temperature": 0, **extra})  # warm-up

    def client(i: int) -> None:
        for r in range(requests):
            prompt = PROMPTS[(i + r) % len(PROMPTS)]
            start = time.perf_counter()
            reply = _post(url, {"model": models[i % len(models)], "prompt": prompt, "max_tokens": tokens,
                                "temperature": 0, **extra})
            latencies.append(time.perf_counter() - start)
            generated.append(reply["usage"]["completion_tokens"])
            texts[f"{models[i % len(models)]} | {prompt}"] = reply["choices"][0]["text"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {"clients": clients, "requests": len(latencies), "tokens": sum(generated),
            "tokens_per_s": sum(generated) / wall, "p50_s": statistics.median(latencies),
            "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))], "texts": texts}


def random_model(tokenizer_name: str, hidden: int, layers: int, folder: Path) -> str:
    """A random-init LLaMA-shaped model (LLaMA-2's proportions at width ``hidden``) in bf16 with a real tokenizer,
    built on the GPU when there is one: what a serving benchmark needs from a 7B-shaped model without its weights."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ..models.loader import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer_name))
    config = LlamaConfig(hidden_size=hidden, intermediate_size=int(hidden * 2.6875), num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 128), num_key_value_heads=max(1, hidden // 128),
                         vocab_size=len(tokenizer), max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, torch_dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run_serve_bench(args) -> list[dict]:
    from ..config.schema import EMBEDDED_MODEL
    from ..models.loader import resolve_model_path

    concurrency = [int(c) for c in args.concurrency.split(",")]
    if any(c < 1 for c in concurrency) or args.requests_per_client < 1 or args.serve_tokens < 1:
        raise UserError("--concurrency, --requests_per_client and --serve_tokens take positive integers")
    with tempfile.TemporaryDirectory() as tmp:
        if args.serve_random:
            hidden, _, layers = args.serve_random.partition(",")
            model_dir = random_model(args.serve_model or EMBEDDED_MODEL, int(hidden), int(layers or 1),
                                     Path(tmp) / "base")
        else:
            model_dir = resolve_model_path(args.serve_model or EMBEDDED_MODEL)
        if args.engine == "vllm":
            return _measure_vllm(args, model_dir, concurrency, Path(tmp))
        return _measure_servers(args, model_dir, concurrency, Path(tmp))


def _measurer(args, rows: list[dict]):
    def measure(scenario: str, label: str, url: str, models: list[str], clients: int, ignore_eos: bool) -> dict:
        row = {"scenario": scenario, "served": label, **load(url, models, clients, args.requests_per_client,
                                                             args.serve_tokens, ignore_eos)}
        print(f"bench progress: ({scenario}) {label}, {clients} clients: {row['tokens_per_s']:.1f} tokens/s, "
              f"p50 {row['p50_s']:.2f} s", file=sys.stderr, flush=True)
        rows.append(row)
        return row

    return measure


def vllm_python() -> str:
    """An interpreter that imports vLLM: this one, else the checkout's .venv-vllm (scripts/setup_vllm.sh)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    beside = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
    if beside.is_file():
        return str(beside)
    raise UserError("--engine vllm needs vLLM: bash scripts/setup_vllm.sh (it builds .venv-vllm), or pip install vllm")


def _plugin_serve_command(model_dir: str, port: int, max_batch_size: int, adapters: dict[str, Path],
                         *extra: str) -> list[str]:
    """``plugin.serve`` with the base and every adapter of ``adapters`` on one server."""
    return [sys.executable, "-m", "plugin.serve", "--base", model_dir, "--port", str(port), "--max_batch_size",
            str(max_batch_size), *(f"--adapter={name}={path}" for name, path in adapters.items()), *extra]


def _measure_vllm(args, model_dir: str, concurrency: list[int], tmp: Path) -> list[dict]:
    """(v): each of the base, MoR, LoRATRF and MPLoRA-as-LoRA on its own vLLM server, the same load on each."""
    python, rows = vllm_python(), []
    measure = _measurer(args, rows)
    adapters = make_adapters(model_dir, tmp, args.rank, args.experts, VLLM_METHODS)
    served = {"vllm base": (model_dir, [])}
    for name in ("mor", "loratrf"):
        subprocess.run([sys.executable, "-m", "plugin.export", str(adapters[name]), "--vllm", str(tmp / f"{name}_vllm")],
                       check=True, stdout=subprocess.DEVNULL)
        served[f"vllm {name}"] = (str(tmp / f"{name}_vllm"), [])
    subprocess.run([sys.executable, "-m", "plugin.export", str(adapters["mplora"]), "--as-lora", str(tmp / "as_lora")],
                   check=True, stdout=subprocess.DEVNULL)
    served["vllm mplora (as LoRA)"] = (model_dir, ["--enable-lora", "--lora-modules", f"mplora={tmp / 'as_lora'}",
                                                   "--max-lora-rank", str(max(8, args.rank)), "--max-loras", "1"])
    env = {**vllm_cpu_env(), **os.environ}  # plugin.serve --engine vllm's defaults
    for label, (model, extra) in served.items():
        port = _free_port()
        name = "mplora" if extra else "model"
        command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
                   "model", "--port", str(port), "--dtype", "float32", "--max-num-seqs", str(max(concurrency)),
                   "--max-model-len", "2048", *([] if args.vllm_compiled else ["--enforce-eager"]), *extra]
        with running(command, port, env, 1800 if args.vllm_compiled else 300) as url:
            for clients in concurrency:
                measure("v", label, url, [name], clients, True)
    port = _free_port()
    ours = _plugin_serve_command(model_dir, port, max(concurrency), adapters, "--dtype", "float32")
    with running(ours, port) as url:
        for clients in concurrency:
            for label, name in [("base", model_dir), *((n, n) for n in VLLM_METHODS)]:
                measure("v", f"plugin.serve {label}", url, [name], clients, True)
    return rows


def _measure_servers(args, model_dir: str, concurrency: list[int], tmp: Path) -> list[dict]:
    rows = []
    measure = _measurer(args, rows)

    adapters = make_adapters(model_dir, tmp, args.rank, args.experts)
    port = _free_port()
    ours = _plugin_serve_command(model_dir, port, max(concurrency), adapters)
    with running(ours, port) as url:
        for clients in concurrency:
            for name in ADAPTER_METHODS:
                measure("a", name, url, [name], clients, True)
            measure("b", "plugin.serve (base)", url, [model_dir], clients, False)
        top = max(concurrency)
        measure("c", "one adapter (mor)", url, ["mor"], top, True)
        measure("c", "three adapters (lora, mor, loratrf)", url, list(ADAPTER_METHODS), top, True)
    port = _free_port()
    theirs = [sys.executable, "-m", "transformers.cli.transformers", "serve", model_dir, "--port", str(port),
              "--host", "127.0.0.1", "--device", "auto" if _has_cuda() else "cpu"]
    theirs += ["--continuous-batching"] if args.transformers_cb else []
    try:
        with running(theirs, port) as url:
            for clients in concurrency:
                measure("b", "transformers serve (base)", url, [model_dir], clients, False)
    except UserError as err:  # an older transformers, or one without its [serving] extra: (a) and (c) still stand
        print(f"note: {err}", file=sys.stderr)
    ours_b = [r for r in rows if r["served"] == "plugin.serve (base)"]
    theirs_b = [r for r in rows if r["served"] == "transformers serve (base)"]
    if theirs_b:
        same = all(a["texts"] == b["texts"] for a, b in zip(ours_b, theirs_b))
        print(f"bench progress: (b) both servers gave the same greedy answers: {'yes' if same else 'NO'}",
              file=sys.stderr)
    return rows


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def serve_table(rows: list[dict]) -> str:
    """One line per measurement, with its ratio to the yardstick of the same scenario and client count."""

    def yardstick(row):
        pick = {"a": "lora", "b": "transformers serve (base)", "c": "one adapter (mor)",
                "v": "vllm base"}[row["scenario"]]
        return next((r for r in rows if r["scenario"] == row["scenario"] and r["served"] == pick
                     and r["clients"] == row["clients"]), None)

    lines = ["| scenario | served | clients | tokens/s | p50 latency (s) | p95 latency (s) | tokens/s ratio |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        base = yardstick(row)
        ratio = f"{row['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "n/a"
        lines.append(f"| {row['scenario']} | {row['served']} | {row['clients']} | {row['tokens_per_s']:.1f} | "
                     f"{row['p50_s']:.2f} | {row['p95_s']:.2f} | {ratio} |")
    return "\n".join(lines)
