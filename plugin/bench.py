"""``python -m plugin.bench``: step time and peak memory (or generation speed, or serving throughput) of each
adapter as ratios to PEFT LoRA in the same run. The measuring is ``plugin.experiments.benchmark`` (and
``serve_bench``); this module is its command line."""

from __future__ import annotations

import argparse
import sys

from .experiments.benchmark import GENERATE_METHODS, LLAMA_LINEARS, METHODS, run
from .utils.errors import UserError, exits_cleanly_on_user_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plugin.bench", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--methods", help=f"comma list (default: {','.join(METHODS)}; with --generate: "
                   f"{','.join(GENERATE_METHODS)})")
    p.add_argument("--hidden", type=int, default=512,
                   help="model width; the FFN is 2.6875x it, as LLaMA's (4096 -> 11008)")
    p.add_argument("--layers", type=int, default=8, help="decoder layers of the random-init LLaMA-shaped model")
    p.add_argument("--vocab", type=int, default=4096, help="vocabulary size (LLaMA-2: 32000)")
    p.add_argument("--batch", type=int, default=4, help="sequences per step (with --generate: generated in parallel)")
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence (with --generate: the prompt's length)")
    p.add_argument("--rank", type=int, default=8, help="r of every method (lora_alpha = 2r)")
    p.add_argument("--experts", type=int, default=8, help="MoR's N (and lora_wide's rank multiplier)")
    p.add_argument("--targets", default="gate_proj,up_proj,down_proj",
                   help=f"comma list of the layers to adapt, from {','.join(LLAMA_LINEARS)}")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocations, caches)")
    p.add_argument("--steps", type=int, default=5, help="timed steps; the median is reported")
    p.add_argument("--generate", type=int, default=0,
                   help="time generation of this many new tokens (inference) instead of a training step")
    p.add_argument("--mixed", type=int, default=1, metavar="K",
                   help="with --generate: each model holds K adapters of its method and the batch's rows are spread "
                        "over them (PEFT's adapter_names: a server batching requests for several adapters); compare "
                        "with the same command without --mixed")
    p.add_argument("--compile", action="store_true",
                   help="also measure each method with the model's forward under torch.compile (rows '<method>+compile'): "
                        "eager vs compiled training step, or generation with --generate")
    p.add_argument("--layer_only", action="store_true",
                   help="time one FFN-shaped layer with its adapter instead of the whole model")
    p.add_argument("--load_in_4bit", action="store_true",
                   help="bnb nf4 base (double quant), as QLoRA users train (e.g. one LLaMA-2-7B layer: "
                        "--load_in_4bit --hidden 4096 --layers 1 --vocab 32000 --batch 1 --seq 512)")
    p.add_argument("--compute_dtype", choices=["bfloat16", "float32"], default="bfloat16",
                   help="with --load_in_4bit: the dtype the 4-bit weights are dequantised to for each matmul. "
                        "bfloat16 is QLoRA's; on a CPU without bf16 instructions (AVX2 only) its matmuls are "
                        "emulated and hide the adapters' cost, float32 shows it")
    p.add_argument("--engine", choices=["ddp", "fsdp", "vllm"],
                   help="train under this engine in --processes processes (torchrun; gloo on CPU): per-process peak "
                        "memory; with --serve, vllm: serve with vLLM instead (MoR, LoRATRF exported for it and MPLoRA "
                        "as LoRA, against the base; vLLM from this environment or .venv-vllm, scripts/setup_vllm.sh)")
    p.add_argument("--processes", type=int, default=2, help="processes for --engine")
    p.add_argument("--rl", choices=["dpo", "grpo"],
                   help="time one optimiser step of the package's DPO or GRPO trainer (TRL's, with the reference "
                        "forward or the sampling) instead of a plain training step; rows of random words with the "
                        "embedded tokenizer (--seq tokens: DPO's prompt and answers half each, GRPO's prompt)")
    p.add_argument("--model_dir", help=argparse.SUPPRESS)
    p.add_argument("--sweep", help="one setting over several values, e.g. experts=1,2,4,8,16 or seq=128,256,512")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the method list this many times in rounds (with --generate: in one process); the table "
                        "shows each method's median and the range of its per-round ratios to LoRA (identical runs "
                        "differ by up to 10%% on a busy CPU)")
    p.add_argument("--serve", action="store_true",
                   help="serving throughput and latency of plugin.serve under concurrent clients on the embedded "
                        "model (or --serve_model): MoR / LoRATRF vs LoRA, our server vs `transformers serve` on the base, "
                        "clients over three adapters vs one")
    p.add_argument("--concurrency", default="1,4,16", help="with --serve: client counts (default 1,4,16)")
    p.add_argument("--requests_per_client", type=int, default=2, help="with --serve: requests each client sends")
    p.add_argument("--serve_tokens", type=int, default=32, help="with --serve: max_tokens of each request")
    p.add_argument("--serve_model", help="with --serve: the model served (default: embedded SmolLM2-135M-Instruct); "
                                         "with --serve_random: the tokenizer's source")
    p.add_argument("--serve_random", metavar="HIDDEN,LAYERS",
                   help="with --serve: serve a random-init LLaMA-shaped model of this width and depth instead (e.g. "
                        "4096,8: LLaMA-2-7B's layers, eight of them), with --serve_model's tokenizer")
    p.add_argument("--vllm_compiled", action="store_true",
                   help="with --serve --engine vllm: vLLM's default compiled graphs (torch.compile, a few minutes of "
                        "compiling per server on a CPU) instead of eager mode, the mode the vLLM tests check token for "
                        "token")
    p.add_argument("--transformers_cb", action="store_true",
                   help="with --serve: run `transformers serve` with --continuous-batching (default: its default)")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (args.engine == "vllm") != bool(args.serve and args.engine):
        raise UserError("--engine vllm is a server: pass it with --serve (and --serve with no training engine)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
