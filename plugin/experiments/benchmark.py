"""Step time and peak memory of each adapter as ratios to PEFT LoRA in the same run.

Each method trains in its own subprocess (clean peak-RSS on CPU; ``max_memory_allocated`` on CUDA) on the same
random-init LLaMA-shaped model, batch and sequence length; generation (``--generate``) runs every method in one
process. Timing: median of several steps after warm-up; ``--repeats`` runs the methods in rounds. The naive MoR
reference loops over experts, one ``B (Omega_A[i] * A x)`` per expert, as MoE-LoRA does.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

from ..tuners import LoRATRFConfig, MoRConfig, MPLoraConfig
from ..utils.errors import UserError

METHODS = ["lora", "mplora", "mor", "mor_naive", "loratrf"]
# lora_wide: PEFT LoRA at rank N*r, the per-token arithmetic of MoR's folded (N*r) x d_out expert matrix (MoR does
# at least this much), so it shows how much of MoR's gap to LoRA is the method's arithmetic
GENERATE_METHODS = ["lora", "lora_wide", "mplora", "mplora_merged", "mor", "loratrf"]
LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # what --targets names
PROGRESS = "bench progress: "
COMPILED = "+compile"  # --compile: each method also measured under torch.compile, as "<method>+compile"  # a child's stderr lines shown as they come; the rest only if it fails


def _peft_config(method: str, rank: int, experts: int, targets: list[str]):
    from peft import LoraConfig

    common = dict(r=rank, lora_alpha=2 * rank, target_modules=targets)
    return {
        "lora": lambda: LoraConfig(**common),
        "lora_wide": lambda: LoraConfig(**{**common, "r": rank * experts, "lora_alpha": 2 * rank * experts}),
        "mplora": lambda: MPLoraConfig(num_paths=4, **common),
        "mplora_merged": lambda: MPLoraConfig(num_paths=4, **common),
        "mor": lambda: MoRConfig(num_experts=experts, **common),
        "mor_naive": lambda: MoRConfig(num_experts=experts, **common),
        "loratrf": lambda: LoRATRFConfig(**common),
    }[method]()


def _use_naive_mor(model) -> None:
    """Swap MoR layers to the per-expert loop (benchmark reference only)."""
    import torch

    from ..tuners.auxiliary import adapter_layers
    from ..tuners.mor import MoRLayer

    class NaiveMoRLayer(MoRLayer):
        def _adapter_output(self, name, x, result):
            gates = torch.softmax(self.mor_router[name](x.to(torch.float32)), dim=-1)
            z = self.low_rank(name, x)
            b = self.mor_B[name]
            delta = sum(
                gates[..., i : i + 1] * self.mor_omega_B[name].weight[i] * b(self.mor_omega_A[name].weight[i] * z)
                for i in range(self.num_experts[name])
            )
            return result + (delta * self.scaling[name]).to(result.dtype)

    for _, layer in adapter_layers(model, MoRLayer):
        layer.__class__ = NaiveMoRLayer


def _llama_config(args):
    from transformers import LlamaConfig

    heads = max(1, args.hidden // 128 if args.load_in_4bit else args.hidden // 64)  # LLaMA-2-7B: 32 heads of 128
    return LlamaConfig(hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.6875), num_hidden_layers=args.layers,
                       num_attention_heads=heads, num_key_value_heads=heads, vocab_size=args.vocab,
                       max_position_embeddings=max(2048, args.seq))


def save_random_model(args, folder: str) -> str:
    """The random-init base saved in bf16, once, so each method's process loads the same 4-bit weights."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(_llama_config(args)).to(torch.bfloat16).save_pretrained(folder)
    return folder


def measure(method: str, args) -> dict:
    """Run in a child process: build, warm up, time, report."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.layer_only:
        return _measure_layer(method, args, device)
    step, trainable = _build_step(method, args, device)
    return {"method": method, "trainable": trainable, **_time_steps(step, args, device)}


def measure_generation(methods: list[str], args) -> list[dict]:
    """Generation of every method in this one process, in ``--repeats`` rounds (lora, mor, ..., lora, mor, ...): a
    slow spell of the machine hits every method alike, and a round costs seconds instead of a process start-up per
    method. (No memory column here, so nothing needs a clean process.)"""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps = {method: _build_step(method, args, device) for method in methods}
    rows = []
    for round_ in range(args.repeats):
        for method, (step, trainable) in steps.items():
            timing = _time_steps(step, args, device)
            rows.append({"method": method, "trainable": trainable, "round": round_, **timing,
                         "tokens_per_s": args.batch * args.generate / timing["step_s"]})
        print(f"{PROGRESS}generation round {round_ + 1} of {args.repeats} done", file=sys.stderr, flush=True)
    return rows


def _build_step(method: str, args, device: str):
    """(one timed step of ``method``: a training step, or generating ``--generate`` tokens; its trainable count)."""
    import torch
    from peft import get_peft_model
    from transformers import LlamaForCausalLM

    from ..tuners.auxiliary import weighted_aux_loss

    compiled = method.endswith(COMPILED)
    method = method.removesuffix(COMPILED)
    torch.manual_seed(0)  # the same base weights and inputs for every method
    if args.model_dir:  # the 4-bit base, saved once by the parent
        from ..models.loader import load_base_model

        model = load_base_model(args.model_dir, load_in_4bit=True, bf16=args.compute_dtype == "bfloat16")
    else:
        model = LlamaForCausalLM(_llama_config(args)).to(device)
    if args.rl:  # the stage's TRL trainer adds the adapter and runs its own step
        from .rl_bench import build_rl_step

        return build_rl_step(model, _peft_config(method, args.rank, args.experts, args.targets.split(",")), args)
    model = get_peft_model(model, _peft_config(method, args.rank, args.experts, args.targets.split(",")))
    for k in range(1, args.mixed):  # --mixed K: K adapters of the method, the batch's rows spread over them
        model.add_adapter(f"adapter{k}", _peft_config(method, args.rank, args.experts, args.targets.split(",")))
    if method == "mor_naive":
        _use_naive_mor(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)  # before a merge folds it away
    peft_model = model
    if args.engine:
        model = _distribute(model, args.engine, device)
    if method == "mplora_merged":
        model = model.merge_and_unload()
    if compiled:  # the transformers model's forward, which training steps and generate both call
        hf_model = model.get_base_model() if hasattr(model, "get_base_model") else model
        hf_model.forward = torch.compile(hf_model.forward)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    if args.generate:
        model.eval()
        names = ["default", *(f"adapter{k}" for k in range(1, args.mixed))]
        mixed = {"adapter_names": [names[row % len(names)] for row in range(args.batch)]} if args.mixed > 1 else {}

        def step():
            with torch.no_grad():
                model.generate(input_ids=ids, max_new_tokens=args.generate, min_new_tokens=args.generate,
                               do_sample=False, pad_token_id=0, **mixed)
    else:
        model.train()

        def step():  # a training step's loss: the task loss plus the weighted auxiliary terms, as the trainer adds
            loss = model(input_ids=ids, labels=ids).loss
            aux, _ = weighted_aux_loss(peft_model, step=0)
            (loss if aux is None else loss + aux).backward()
            model.zero_grad(set_to_none=True)

    return step, trainable


def _distribute(model, engine: str, device: str):
    """Wrap for ``engine`` in this torchrun process: DDP, or FSDP1 with PEFT's wrap policy (what transformers
    installs for a PEFT model), full shard, use_orig_params false."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
        model = model.cuda()
    if engine == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    from peft.utils.other import fsdp_auto_wrap_policy
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel(model, auto_wrap_policy=fsdp_auto_wrap_policy(model), use_orig_params=False,
                                    device_id=torch.device(device, torch.cuda.current_device()) if device == "cuda"
                                    else torch.device("cpu"))


def _measure_layer(method: str, args, device: str) -> dict:
    """One up_proj-shaped linear layer with the adapter: forward + backward of the layer alone."""
    import torch
    from peft import get_peft_model
    from torch import nn

    d_in, d_out = args.hidden, int(args.hidden * 2.6875)
    module = nn.Sequential()
    module.add_module("up_proj", nn.Linear(d_in, d_out, bias=False))
    model = get_peft_model(module.to(device), _peft_config(method, args.rank, args.experts, ["up_proj"]))
    if method == "mor_naive":
        _use_naive_mor(model)
    x = torch.randn(args.batch * args.seq, d_in, device=device)

    def step():
        model(x).square().mean().backward()
        model.zero_grad(set_to_none=True)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"method": method, "trainable": trainable, **_time_steps(step, args, device)}


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def _time_steps(step, args, device) -> dict:
    import torch

    for _ in range(args.warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:  # Linux: restart the peak-RSS count here, so loading (e.g. quantising a 4-bit base) does not set it;
        # memory freed since (the full weights FSDP sharded away) goes back to the OS first
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _peak_rss()
    if args.engine:  # the largest process's peak, the slowest process's time
        import torch.distributed as dist

        both = torch.tensor([float(peak), statistics.median(times)], dtype=torch.float64,
                            device=device if device == "cuda" else "cpu")
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        return {"step_s": float(both[1]), "peak_bytes": int(both[0]), "device": device,
                "engine": f"{args.engine} x {dist.get_world_size()}"}
    return {"step_s": statistics.median(times), "peak_bytes": peak, "device": device}


def run_methods(args, methods: list[str], overrides: dict | None = None) -> list[dict]:
    """Training: each method in its own process (a clean peak-RSS count), the whole list ``--repeats`` times in
    rounds so that a slow spell of the machine hits every method alike. Generation: one process runs the rounds.
    Each row records its round."""
    settings = {**vars(args), **(overrides or {})}
    passthrough = [f"--{k}" if v is True else f"--{k}={v}" for k, v in settings.items()
                   if k not in ("json", "child", "sweep", "methods") and v is not None and v is not False]
    launcher = [sys.executable]
    if args.engine:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.processes)]
    children = [",".join(methods)] if args.generate else [m for _ in range(args.repeats) for m in methods]
    rows = []
    for i, child in enumerate(children):
        stdout = _run_child([*launcher, "-m", "plugin.bench", *passthrough, "--child", child])
        round_ = i // len(methods)
        rows += [{"round": round_, **row, **(overrides or {})} for row in json.loads(stdout.strip().splitlines()[-1])]
        print(f"measured {child} {overrides or ''}" + (f"(round {round_ + 1} of {args.repeats})"
              if args.repeats > 1 and not args.generate else ""), file=sys.stderr, flush=True)
    return rows


def _run_child(command: list[str]) -> str:
    """Run one measuring process: return its stdout, relay its progress lines, stop with its stderr's tail if it
    fails."""
    import collections
    import threading

    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout = []
    reader = threading.Thread(target=lambda: stdout.append(child.stdout.read()))
    reader.start()
    tail = collections.deque(maxlen=40)
    for line in child.stderr:
        if line.startswith(PROGRESS):
            print(line.removeprefix(PROGRESS), end="", file=sys.stderr, flush=True)
        tail.append(line)
    reader.join()
    if child.wait() != 0:
        raise SystemExit(f"benchmark process failed: {' '.join(command[-2:])}\n{''.join(tail)[-2000:]}")
    return stdout[0]


def _ratio(rows: list[dict], method: str, key: str) -> str:
    """``method``'s ``key`` over LoRA's in the same round: the median, and the range when the rounds differ."""
    lora = {r["round"]: r[key] for r in rows if r["method"] == "lora"}
    ratios = sorted(r[key] / lora[r["round"]] for r in rows if r["method"] == method)
    median = f"{statistics.median(ratios):.2f}x" if key != "peak_bytes" else f"{statistics.median(ratios):.3f}x"
    return median if ratios[0] == ratios[-1] else f"{median} ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def ratio_table(rows: list[dict], generate: bool) -> str:
    """One line per method: its median over rounds, and its ratio to LoRA's measurement of the same round."""
    by_method = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)

    def median(method, key):
        return statistics.median(r[key] for r in by_method[method])

    if generate:
        lines = ["| method | tokens/s | speed / LoRA |", "|---|---:|---:|"]
        lines += [f"| {m} | {median(m, 'tokens_per_s'):.1f} | {_ratio(rows, m, 'tokens_per_s')} |" for m in by_method]
        return "\n".join(lines)
    lines = ["| method | trainable | step (s) | time / LoRA | peak MB | memory / LoRA |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {m} | {rs[0]['trainable']:,} | {median(m, 'step_s'):.3f} | {_ratio(rows, m, 'step_s')} | "
              f"{median(m, 'peak_bytes') / 2**20:.0f} | {_ratio(rows, m, 'peak_bytes')} |" for m, rs in by_method.items()]
    return "\n".join(lines)


def run(args) -> int:
    """Check the arguments, then measure (a child process measures one method or one round of them)."""
    if args.serve:
        from .serve_bench import run_serve_bench, serve_table

        rows = run_serve_bench(args)
        print("\n" + serve_table(rows))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1, default=str)
        return 0
    if args.child:
        rows = measure_generation(args.child.split(","), args) if args.generate else [measure(args.child, args)]
        if not args.engine or int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(rows))
        return 0
    known = GENERATE_METHODS if args.generate else METHODS
    methods = args.methods.split(",") if args.methods else known
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise UserError(f"--methods: unknown method '{unknown[0]}'; choose from {', '.join(known)}")
    if "lora" not in methods or len(set(methods)) < len(methods):
        raise UserError(f"--methods {','.join(methods)}: name lora (the yardstick) and each method once; "
                        "--repeats N runs the list N times")
    if args.compile:
        if args.engine or args.layer_only:
            raise UserError("--compile measures the whole model in one process: drop --engine / --layer_only")
        methods = [name for m in methods for name in (m, m + COMPILED)]
    bad_targets = [t for t in args.targets.split(",") if t not in LLAMA_LINEARS]
    if bad_targets:
        raise UserError(f"--targets: '{bad_targets[0]}' is not a layer of the benchmark's LLaMA blocks; choose from "
                        f"{','.join(LLAMA_LINEARS)}")
    if args.repeats < 1:
        raise UserError(f"--repeats must be at least 1, got {args.repeats}")
    print(f"{platform.machine()}, hidden {args.hidden}, {args.layers} layers, batch {args.batch} x seq {args.seq}, "
          f"r {args.rank}, N {args.experts}, targets {args.targets}"
          + (f", generating {args.generate} tokens" if args.generate else "")
          + (f", bnb nf4 base with {args.compute_dtype} compute" if args.load_in_4bit else "")
          + (f", {args.engine} on {args.processes} processes" if args.engine else "")
          + (f", one {args.rl} step of the package's TRL trainer" if args.rl else ""))
    if args.rl:
        if args.generate or args.layer_only or args.engine or args.compile or args.mixed != 1:
            raise UserError(f"--rl {args.rl} times the trainer's whole step on one process: drop --generate, "
                            "--layer_only, --engine, --compile and --mixed")
        from transformers import AutoTokenizer

        from ..models.embedded import embedded_model_path

        args.vocab = max(args.vocab, len(AutoTokenizer.from_pretrained(embedded_model_path())))  # its rows' tokens
    if args.engine and (args.generate or args.layer_only):
        raise UserError("--engine measures training of the whole model: drop --generate / --layer_only")
    if args.mixed != 1 and (not args.generate or args.mixed < 1 or args.mixed > args.batch
                            or "mplora_merged" in methods):
        raise UserError(f"--mixed {args.mixed}: K adapters in one generated batch needs --generate, 1 <= K <= --batch "
                        f"({args.batch}), and no mplora_merged (a merged model holds one adapter)")
    if args.load_in_4bit and not args.model_dir:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            args.model_dir = save_random_model(args, folder)
            return _report(args, methods)
    return _report(args, methods)


def _report(args, methods: list[str]) -> int:
    if not args.sweep:
        rows = run_methods(args, methods)
        print("\n" + ratio_table(rows, bool(args.generate)))
    else:
        key, _, values = args.sweep.partition("=")
        if key not in vars(args) or not values:
            raise UserError(f"--sweep {args.sweep}: expected KEY=v1,v2 with KEY one of the size flags")
        rows = []
        for value in values.split(","):
            block = run_methods(args, methods, {key: int(value)})
            rows += block
            print(f"\n{key} = {value}\n" + ratio_table(block, bool(args.generate)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0
