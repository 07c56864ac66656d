"""One optimiser step of every method under each sharding engine, compared with the single-process step.

Run under ``torchrun --nproc_per_node 2`` on CPU (gloo): ``python tests/engine_worker.py ENGINES OUT.json`` (the suite runs
it first in its one launch, tests/launches.py), with
ENGINES a comma list of ddp, fsdp1 (use_orig_params false), fsdp1_orig (true), fsdp2, zero3, and qlora_fsdp1 /
qlora_fsdp2 (the QLoRA-FSDP recipe: the 4-bit base saved at $ENGINE_WORKER_4BIT_BASE, loaded as under ``accelerate
launch`` with FSDP). One launch runs them all (process start-up is most of a small engine's time). Each rank takes
its half of a global batch of 4 sequences, adds ``plugin.weighted_aux_loss`` to the cross-entropy and steps SGD; the
reference is one process on the same global batch as the same two micro-batches, gradients averaged (MoR's balance
loss is a per-micro-batch statistic, so the engine's processes are its micro-batches). Rank 0 writes, per engine and
method, the largest absolute difference between the engine's updated adapter weights and the reference's (or the
error it raised), and how much the auxiliary losses moved the reference (so a term lost under the engine would
show).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
from helpers import METHOD_CONFIGS, tiny_llama  # tests/ is this script's folder
from peft import get_peft_model

import plugin

LR = 0.5
TIMEOUT = timedelta(seconds=120)  # a rank that failed alone must not hang the other for gloo's 30 minutes
# auxiliary weights large enough that a lost or doubled term shows in the update
AUX_WEIGHTS = {"mplora": {"orth_weight": 5.0}, "mor": {"router_aux_loss_coef": 2.0}}
METHODS = {name: functools.partial(make, target_modules="all-linear", **AUX_WEIGHTS.get(name, {}))
           for name, make in METHOD_CONFIGS.items()}


def tiny_base(quantized: bool):
    torch.manual_seed(0)
    if quantized:  # as QLoRA-FSDP loads it: ACCELERATE_USE_FSDP is what `accelerate launch` exports with FSDP
        from plugin.models.loader import load_base_model

        os.environ["ACCELERATE_USE_FSDP"] = "true"
        try:
            return load_base_model(os.environ["ENGINE_WORKER_4BIT_BASE"], load_in_4bit=True, bf16=True)
        finally:
            del os.environ["ACCELERATE_USE_FSDP"]
    return tiny_llama(vocab_size=64, intermediate_size=64).train()


def tiny_peft_model(method: str, quantized: bool):
    base = tiny_base(quantized)
    torch.manual_seed(0)
    model = get_peft_model(base, METHODS[method]())
    model.train()
    return model


def step_loss(model, peft_model, ids: torch.Tensor) -> torch.Tensor:
    loss = model(input_ids=ids, labels=ids).loss
    aux, _ = plugin.weighted_aux_loss(peft_model, step=0)
    return loss if aux is None else loss + aux


def reference_update(method: str, quantized: bool, batch: torch.Tensor, parts: int, aux: bool = True
                     ) -> dict[str, torch.Tensor]:
    model = tiny_peft_model(method, quantized)
    for ids in batch.chunk(parts):
        loss = step_loss(model, model, ids) if aux else model(input_ids=ids, labels=ids).loss
        (loss / parts).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= LR * p.grad
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _fsdp2(model):
    from torch.distributed.fsdp import fully_shard
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    # what accelerate does with PEFT's wrap policy: each trainable leaf and each decoder layer, then the root
    for module in reversed(list(model.modules())):
        leaf_trainable = not list(module.children()) and getattr(module, "weight", None) is not None \
            and module.weight.requires_grad
        if leaf_trainable or isinstance(module, LlamaDecoderLayer):
            fully_shard(module)
    fully_shard(model)
    return model


def engine_update(engine: str, method: str, quantized: bool, local: torch.Tensor) -> dict[str, torch.Tensor]:
    """The adapter weights after one step under ``engine``, gathered in full on every rank."""
    peft_model = tiny_peft_model(method, quantized)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    if engine == "zero3":
        import deepspeed

        ds_config = {"train_micro_batch_size_per_gpu": local.shape[0], "gradient_accumulation_steps": 1,
                     "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True,
                     "gradient_clipping": 0.0}
        model, *_ = deepspeed.initialize(model=peft_model, optimizer=torch.optim.SGD(trainable, lr=LR),
                                         config=ds_config)
        model.backward(step_loss(model, peft_model, local))
        model.step()
        params = dict(peft_model.named_parameters())
        with deepspeed.zero.GatheredParameters([params[n] for n in names]):
            return {n: params[n].detach().clone() for n in names}
    if engine == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(peft_model)
    elif engine in ("fsdp1", "fsdp1_orig"):
        from peft.utils.other import fsdp_auto_wrap_policy
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        model = FSDP(peft_model, auto_wrap_policy=fsdp_auto_wrap_policy(peft_model),
                     use_orig_params=engine == "fsdp1_orig", device_id=torch.device("cpu"))
    elif engine == "fsdp2":
        model = _fsdp2(peft_model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    step_loss(model, peft_model, local).backward()
    optimizer.step()
    if engine.startswith("fsdp1"):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType

        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=False)):
            state = model.state_dict()
        return {n: state[n].clone() for n in names}
    params = dict(peft_model.named_parameters())
    return {n: (params[n].full_tensor() if hasattr(params[n], "full_tensor") else params[n]).detach().clone()
            for n in names}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in b)


def engine_results(engine: str, batch: torch.Tensor, rank: int, world: int) -> dict:
    quantized = engine.startswith("qlora_")
    engine = engine.removeprefix("qlora_")
    results = {}
    for method in METHODS:
        try:
            expected = reference_update(method, quantized, batch, world)
            got = engine_update(engine, method, quantized, batch.chunk(world)[rank])
            without_aux = reference_update(method, quantized, batch, world, aux=False)
            results[method] = {"max_abs_diff": _max_diff(got, expected), "params": len(expected),
                               "aux_effect": _max_diff(expected, without_aux)}
        except Exception as exc:  # noqa: BLE001 - the test reports every method's failure, not the first
            results[method] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                               "trace": traceback.format_exc()[-1500:]}
        dist.barrier()
    return results


def main(engines: str, out: str, keep_process_group: bool = False) -> None:
    """``keep_process_group``: leave the group up for what runs next in the launch (tests/train_worker.py)."""
    engines = engines.split(",")
    if "zero3" in engines:  # DeepSpeed's own set-up, over the same gloo process group the others use
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo", timeout=TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(1)
    batch = torch.randint(0, 64, (4, 12))
    results = {engine: engine_results(engine, batch, rank, world) for engine in engines}
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
    if not keep_process_group:
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main(*sys.argv[1:3])
