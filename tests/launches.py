"""The suite's one multi-process launch: each sharding engine's one-step check (tests/engine_worker.py), then every
``plugin.train`` run that the tests check under 2 processes (DDP, the YAML's ``deepspeed:`` key at ZeRO-2 and ZeRO-3
for every method, DPO under DDP and ZeRO-3, LLaMA-Factory's ZeRO-3 example, Axolotl's Jamba ZeRO-2 example) run in turn inside one
``torchrun --standalone`` job (``tests/train_worker.py``); each test then checks its own run's folder and output.
The single-process references stay in the tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .helpers import (QUANTIZABLE_WIDTH, FIXTURES_DIR, REPO, adapter_weights, preference_rows, tiny_llama,
                      write_chat_rows, write_jsonl, write_yaml)

LF = FIXTURES_DIR / "peer_configs" / "llamafactory"
AX = FIXTURES_DIR / "peer_configs" / "axolotl"
# an update both ways: SGD, no schedule, no clipping, so one process and two agree to rounding
SGD = {"optimizer": "sgd", "lr_scheduler": "constant", "max_grad_norm": 0.0, "learning_rate": 0.5, "save_steps": 100}
# DeepSpeed accepts only its tested optimizers with the shipped files (AdamW)
ADAMW = {"lr_scheduler": "constant", "max_grad_norm": 0.0, "save_steps": 100, "optimizer": "adamw_torch",
         "learning_rate": 0.01}
# every sharding engine of tests/engine_worker.py; zero3 last: it hooks modules
ENGINES = ["fsdp1", "fsdp1_orig", "fsdp2", "qlora_fsdp1", "qlora_fsdp2", "zero3"]
DS_METHODS = {"mplora": {"mplora_num_paths": 2, "mplora_orth_weight": 5.0}, "loratrf": {"loratrf_mode": "output"},
              "mor": {"mor_num_experts": 3, "mor_router_aux_loss_coef": 1.0}}


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), for launchers that need one named."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO), **extra}


def deepspeed_runs_zero2() -> bool:
    """DeepSpeed 0.18's ZeRO-2 all-gather writes in place into a split view, which torch 2.13 refuses (seen under
    Axolotl's pinned deepspeed < 0.19; 0.19 runs it, the main environment)."""
    import deepspeed

    return tuple(map(int, deepspeed.__version__.split(".")[:2])) >= (0, 19)


def train_keys(model_dir: Path, data: Path) -> dict:
    """The keys of a small, fast run on the tiny model (``base_cfg`` in conftest.py adds its output_dir)."""
    return dict(base_model=str(model_dir), adapter="mor", lora_r=4, lora_alpha=8,
                datasets=[{"path": str(data), "type": "messages"}], sequence_len=128, micro_batch_size=2,
                max_steps=2, learning_rate=1e-3, logging_steps=1, save_steps=1, report_to="none")


def save_tiny_jamba(path: Path) -> Path:
    """A tiny random Jamba (mamba + attention layers, routed experts) with the embedded tokenizer."""
    from transformers import AutoTokenizer, JambaConfig, JambaForCausalLM

    from plugin.models.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    torch.manual_seed(0)
    JambaForCausalLM(JambaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_experts=2, num_experts_per_tok=1, expert_layer_period=2, expert_layer_offset=1,
        attn_layer_period=2, attn_layer_offset=1, mamba_d_state=8, use_mamba_kernels=False,
        max_position_embeddings=512, tie_word_embeddings=True)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@dataclass
class Launch:
    """The finished launch: per run its keys (for the test's one-process reference), folder, exit status, output."""

    root: Path
    keys: dict
    results: dict
    engines: dict  # tests/engine_worker.py's results: per engine and method

    def rc(self, name: str) -> int:
        return self.results[name]["rc"]

    def engine(self, name: str) -> str | None:
        """What the run's Trainer ran on: "MULTI_CPU" (DDP), "DEEPSPEED zero2", ... (tests/train_worker.py)."""
        return self.results[name]["engine"]

    def out(self, name: str) -> Path:
        return self.root / name

    def weights(self, name: str) -> dict:
        return adapter_weights(self.out(name))

    def output(self, name: str, rank: int = 0) -> str:
        return "".join((self.root / "logs" / f"{name}.rank{rank}.{kind}").read_text() for kind in ("out", "err"))


def run_launch(root: Path, model_dir: Path) -> Launch:
    base = train_keys(model_dir, write_chat_rows(root / "chat.jsonl", 16))
    ds_cwd = root / "ds_cwd"  # holds no examples/deepspeed/: the shipped copies stand in
    ds_cwd.mkdir()
    keys = {"ddp-mplora": {**base, **SGD, "adapter": "mplora", "mplora_orth_weight": 5.0}}
    # DPO (its reference forward included) under DDP and ZeRO-3
    dpo = {**base, "rl": "dpo", "datasets": [{"path": str(write_jsonl(root / "pairs.jsonl", preference_rows(8)))}]}
    keys["ddp-dpo-mplora"] = {**dpo, **SGD, "adapter": "mplora", "mplora_orth_weight": 5.0}
    keys["zero3-dpo-mor"] = {**dpo, **ADAMW, **DS_METHODS["mor"], "adapter": "mor",
                             "deepspeed": "examples/deepspeed/ds_z3_config.json"}
    stages = (2, 3) if deepspeed_runs_zero2() else (3,)
    for stage in stages:
        for adapter, extra in DS_METHODS.items():
            keys[f"zero{stage}-{adapter}"] = {**base, **ADAMW, "adapter": adapter, **extra,
                                             "deepspeed": f"examples/deepspeed/ds_z{stage}_config.json"}
    jobs = [{"name": name, "cwd": str(ds_cwd),
             "argv": [str(write_yaml(root / f"{name}.yaml", **{**k, "output_dir": str(root / name)}))]}
            for name, k in keys.items()]
    # LLaMA-Factory's qwen3_lora_sft_ds3.yaml unchanged but for the model, the adapter and the run length; its
    # deepspeed: names examples/deepspeed/ds_z3_config.json, which the shipped copy stands in for
    jobs.append({"name": "lf-zero3", "cwd": str(LF), "argv": [
        "qwen3_lora_sft_ds3.yaml", "--finetuning_type", "mor", "--model_name_or_path", str(model_dir),
        "--max_steps", "2", "--cutoff_len", "256", "--output_dir", str(root / "lf-zero3")]})
    if deepspeed_runs_zero2():
        # Axolotl's jamba/qlora_deepspeed.yaml (4-bit base, paged_adamw_8bit, deepspeed_configs/zero2.json), only the
        # model, the data, the adapter, the pad token and the run length replaced
        jamba = save_tiny_jamba(root / "jamba")
        jobs.append({"name": "jamba-zero2", "cwd": str(ds_cwd), "argv": [
            str(AX / "jamba_qlora_deepspeed.yaml"), "--adapter", "mor", "--base_model", str(jamba),
            "--datasets", f"[{{path: {LF / 'data' / 'alpaca_en_demo.json'}, type: alpaca}}]",
            "--special_tokens", "{pad_token: '<|im_end|>'}", "--max_steps", "2", "--sequence_len", "256",
            "--output_dir", str(root / "jamba-zero2")]})
    # zero-3 last: a ZeRO-3 Trainer changes how the next model loads until its config is released
    jobs.sort(key=lambda job: "zero3" in job["name"])
    # first, every engine's one-step check (tests/engine_worker.py, read by tests/training/test_engines.py)
    engines_base = root / "engines_base"
    tiny_llama(vocab_size=64, hidden_size=QUANTIZABLE_WIDTH, intermediate_size=2 * QUANTIZABLE_WIDTH).save_pretrained(
        engines_base)
    jobs.insert(0, {"engines": ",".join(ENGINES), "out": str(root / "engines.json")})
    logs = root / "logs"
    logs.mkdir()
    jobs_file = logs / "jobs.json"
    jobs_file.write_text(json.dumps(jobs, indent=1))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "tests" / "train_worker.py"), str(jobs_file)],
                          env=launch_env(DS_ACCELERATOR="cpu", ENGINE_WORKER_4BIT_BASE=str(engines_base)),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Launch(root, keys, json.loads(jobs_file.with_suffix(".results.json").read_text()),
                  json.loads((root / "engines.json").read_text()))
