"""One rank of test_tensor_parallel.py's 2-rank run over vLLM's own parallel linear layers (gloo, CPU):
``python -m tests.vllm_serving.tp_worker RANK WORLD PORT CASES.pt OUT.pt``.

Per case (one adapter), vLLM's layers of a Llama-like model (``qkv_proj``, ``o_proj``, ``gate_up_proj``,
``down_proj`` per decoder layer) get the adapter installed as the served model installs it (``layers.install``),
then the HF checkpoint's tensors, base and adapter, loaded through vLLM's ``AutoWeightsLoader`` and Llama's
``hf_to_vllm_mapper``, and the weights repacked as vLLM's loader does; the rank writes each layer's output for its
part of the inputs (a column-parallel layer reads all of x, a row-parallel one its shard)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

import torch
from torch import nn

PEFT_PREFIX = "base_model.model."


def build(dims: dict) -> nn.Module:
    from vllm.model_executor.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
    from vllm.model_executor.models.llama import LlamaForCausalLM

    class Model(nn.Module):
        packed_modules_mapping = LlamaForCausalLM.packed_modules_mapping
        hf_to_vllm_mapper = LlamaForCausalLM.hf_to_vllm_mapper

    hidden, head, inter = dims["hidden"], dims["head_size"], dims["intermediate"]
    model, layers = Model(), nn.ModuleList()
    for i, (heads, kv_heads) in enumerate(dims["attention"]):
        prefix = f"model.layers.{i}"
        layer, attn, mlp = nn.Module(), nn.Module(), nn.Module()
        attn.qkv_proj = QKVParallelLinear(hidden, head, heads, kv_heads, bias=True,
                                          prefix=f"{prefix}.self_attn.qkv_proj")
        attn.o_proj = RowParallelLinear(heads * head, hidden, bias=True, prefix=f"{prefix}.self_attn.o_proj")
        mlp.gate_up_proj = MergedColumnParallelLinear(hidden, [inter] * 2, bias=True,
                                                      prefix=f"{prefix}.mlp.gate_up_proj")
        mlp.down_proj = RowParallelLinear(inter, hidden, bias=True, prefix=f"{prefix}.mlp.down_proj")
        layer.self_attn, layer.mlp = attn, mlp
        layers.append(layer)
    model.model = nn.Module()
    model.model.layers = layers
    return model


def run_case(dims: dict, case: dict, inputs: dict, rank: int, world: int) -> dict:
    from transformers import LlamaConfig
    from vllm.model_executor.layers.quantization.base_config import QuantizeMethodBase
    from vllm.model_executor.models.utils import AutoWeightsLoader

    from plugin.integrations.vllm.layers import AdaptedProjection, install
    from plugin.tuners import METHODS
    from plugin.tuners.base import LowRankLayer

    config = case["config"]
    model_cls = next(model_cls for config_cls, model_cls in METHODS.values() if type(config) is config_cls)
    model = build(dims)
    hf_config = LlamaConfig(hidden_size=dims["hidden"], num_attention_heads=1)  # PEFT reads model_type from it
    adapted = install(model, hf_config, config, model_cls, "default")
    weights = [(name.removeprefix(PEFT_PREFIX), tensor.clone()) for name, tensor in case["weights"].items()]
    loaded = AutoWeightsLoader(model).load_weights(weights, mapper=model.hf_to_vllm_mapper)
    missing = set(dict(model.named_parameters())) - set(loaded)
    assert not missing, f"not loaded: {sorted(missing)}"
    for module in model.modules():  # vLLM's loader repacks the CPU weights (layer.weight emptied)
        if isinstance(getattr(module, "quant_method", None), QuantizeMethodBase):
            module.quant_method.process_weights_after_loading(module)
    tuner = next(m for m in model.modules() if isinstance(m, LowRankLayer))
    out = {"adapted": adapted, "reduce_results": refusal(tuner),
           "wrapped": sorted(name for name, m in model.named_modules() if isinstance(m, AdaptedProjection))}
    with torch.no_grad():
        for i in range(len(dims["attention"])):
            for own in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"):
                x = inputs[own.partition(".")[2]]
                if own.endswith(("o_proj", "down_proj")):  # row-parallel: this rank's shard of the input
                    x = x.chunk(world, dim=-1)[rank]
                out[f"model.layers.{i}.{own}"] = model.get_submodule(f"model.layers.{i}.{own}")(x)[0]
    return out


def refusal(tuner: nn.Module) -> str | None:
    """What wrapping a row-parallel layer whose ranks keep partial sums (reduce_results=False) raises."""
    from vllm.model_executor.layers.linear import RowParallelLinear

    from plugin.integrations.vllm.layers import AdaptedProjection, Slice

    partial = RowParallelLinear(8, 4, bias=False, reduce_results=False, prefix="x.down_proj")
    try:
        AdaptedProjection(partial, [Slice("x.down_proj", None, 0, 4, 4)], {"x.down_proj": tuner}, "default")
    except NotImplementedError as error:
        return str(error)
    return None


def main(rank: str, world: str, port: str, cases_file: str, out_file: str) -> None:
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import (destroy_distributed_environment, destroy_model_parallel,
                                  init_distributed_environment, initialize_model_parallel)

    import plugin  # noqa: F401  (registers the methods with PEFT)

    rank, world = int(rank), int(world)
    job = torch.load(cases_file, weights_only=False)
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(world_size=world, rank=rank, local_rank=rank, backend="gloo",
                                     distributed_init_method=f"tcp://127.0.0.1:{port}")
        initialize_model_parallel(tensor_model_parallel_size=world)
        results = {name: run_case(job["dims"], case, job["inputs"], rank, world)
                   for name, case in job["cases"].items()}
        destroy_model_parallel()
        destroy_distributed_environment()
    torch.save(results, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:])
