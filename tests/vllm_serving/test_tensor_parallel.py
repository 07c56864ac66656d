"""Tensor parallelism, 2 ranks (gloo, CPU): vLLM's own ``QKVParallelLinear`` (2 kv heads, and 1: then vLLM keeps it
on both ranks), ``MergedColumnParallelLinear`` and ``RowParallelLinear`` with MoR, LoRATRF (both gate modes) and
MPLoRA installed as the served model installs them (tests/vllm_serving/tp_worker.py) give on each rank its part of
what one process gives: the HF projections (``nn.Linear``, same weights) under PEFT with the same adapter. And
``vllm.LLM(..., tensor_parallel_size=2)`` over an exported folder (LoRATRF, output gate: the update reads all of h)
gives transformers + PEFT's greedy tokens."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import plugin

from ..helpers import REPO
from ..launches import free_port, launch_env
from .conftest import COMPLETIONS, TOKENS

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

TP = 2
HIDDEN, HEAD, INTER, NUM_TOKENS = 16, 4, 24, 5
ATTENTION = [(4, 2), (4, 1)]  # (heads, kv heads) of each decoder layer
# each method adapts some slices of the fused layers, not all, and some row-parallel layers
METHODS = {
    "mor": lambda: plugin.MoRConfig(r=4, num_experts=3, init_weights=False,
                                    target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]),
    "loratrf_output": lambda: plugin.LoRATRFConfig(r=4, init_weights=False,
                                                   target_modules=["q_proj", "k_proj", "o_proj", "gate_proj",
                                                                   "down_proj"]),
    "loratrf_input": lambda: plugin.LoRATRFConfig(r=4, trf_mode="input", init_weights=False,
                                                  target_modules=["v_proj", "o_proj", "up_proj", "down_proj"]),
    "mplora": lambda: plugin.MPLoraConfig(r=4, num_paths=3, init_weights=False,
                                          target_modules=["q_proj", "k_proj", "v_proj", "gate_proj", "down_proj"]),
}
COLUMNS = {"qkv_proj": ("self_attn", ["q_proj", "k_proj", "v_proj"]), "gate_up_proj": ("mlp", ["gate_proj", "up_proj"])}
ROWS = {"o_proj": "self_attn", "down_proj": "mlp"}


def hf_model() -> nn.Module:
    """The HF projections of a Llama-like model, named as transformers names them."""
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList()
    for heads, kv_heads in ATTENTION:
        layer, attn, mlp = nn.Module(), nn.Module(), nn.Module()
        attn.q_proj, attn.k_proj = nn.Linear(HIDDEN, heads * HEAD), nn.Linear(HIDDEN, kv_heads * HEAD)
        attn.v_proj, attn.o_proj = nn.Linear(HIDDEN, kv_heads * HEAD), nn.Linear(heads * HEAD, HIDDEN)
        mlp.gate_proj, mlp.up_proj = nn.Linear(HIDDEN, INTER), nn.Linear(HIDDEN, INTER)
        mlp.down_proj = nn.Linear(INTER, HIDDEN)
        layer.self_attn, layer.mlp = attn, mlp
        model.model.layers.append(layer)
    for param in model.parameters():
        param.data.normal_(0, 0.5)
    return model


def hf_names() -> list[str]:
    names = []
    for layer in range(len(ATTENTION)):
        for parent, members in COLUMNS.values():
            names += [f"model.layers.{layer}.{parent}.{member}" for member in members]
        names += [f"model.layers.{layer}.{parent}.{row}" for row, parent in ROWS.items()]
    return names


def vllm_name(hf_name: str) -> str:
    own = hf_name.rpartition(".")[2]
    return next((column for column, (_, members) in COLUMNS.items() if own in members), own)


def module_input(name: str, inputs: dict) -> torch.Tensor:
    if name.endswith("o_proj"):
        return inputs["o_proj"]
    return inputs["down_proj"] if name.endswith("down_proj") else inputs["qkv_proj"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(the inputs, the cases, per method the one-process outputs, base outputs and adapted names (HF names), each
    rank's results)."""
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict

    from plugin.tuners.base import LowRankLayer

    torch.manual_seed(0)
    x = torch.randn(NUM_TOKENS, HIDDEN)
    inputs = {"qkv_proj": x, "gate_up_proj": x, "o_proj": torch.randn(NUM_TOKENS, ATTENTION[0][0] * HEAD),
              "down_proj": torch.randn(NUM_TOKENS, INTER)}
    cases, references = {}, {}
    for seed, (method, config) in enumerate(METHODS.items()):
        torch.manual_seed(seed)
        base = hf_model()
        base_weights = {name: tensor.clone() for name, tensor in base.state_dict().items()}
        model = get_peft_model(base, config()).eval()
        adapted = sorted(name.removeprefix("base_model.model.") for name, module in model.named_modules()
                         if isinstance(module, LowRankLayer))
        for name, param in model.named_parameters():
            if param.requires_grad and "_B." in name:  # drawn, not zero: an update large enough to see
                param.data.normal_(0, 0.3)
        for name, module in model.named_modules():  # t near the mean of what the gate reads: gates open, not all
            if hasattr(module, "trf_t"):
                seen = module_input(name, inputs)
                seen = seen if method == "loratrf_input" else module.base_layer(seen)
                module.trf_t["default"].weight.data = seen.mean(0) + 0.3 * torch.randn(seen.shape[-1])
        with torch.no_grad():
            outputs = {hf: model.base_model.model.get_submodule(hf)(module_input(hf, inputs)) for hf in hf_names()}
            with model.disable_adapter():
                bases = {hf: model.base_model.model.get_submodule(hf)(module_input(hf, inputs)) for hf in adapted}
        references[method] = (outputs, bases, adapted)
        cases[method] = {"config": model.peft_config["default"],
                         "weights": {**base_weights, **get_peft_model_state_dict(model)}}
    tmp = tmp_path_factory.mktemp("tp")
    torch.save({"dims": {"hidden": HIDDEN, "head_size": HEAD, "intermediate": INTER, "attention": ATTENTION},
                "cases": cases, "inputs": inputs}, tmp / "cases.pt")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.vllm_serving.tp_worker", str(rank), str(TP), str(port),
                               str(tmp / "cases.pt"), str(tmp / f"rank{rank}.pt")], cwd=REPO, env=launch_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rank in range(TP)]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
    finally:  # a rank that failed leaves the other waiting in a collective
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ranks = [torch.load(tmp / f"rank{rank}.pt", weights_only=False) for rank in range(TP)]
    return inputs, cases, references, ranks


def rank_part(column: str, layer: int, outputs: dict, rank: int) -> torch.Tensor:
    """Rank ``rank``'s output of vLLM's column-parallel layer: its block of each HF projection's output; k and v
    are cut in as many blocks as there are kv heads when those are fewer than the ranks."""
    parent, members = COLUMNS[column]
    blocks = []
    for member in members:
        shards = min(TP, ATTENTION[layer][1]) if member in ("k_proj", "v_proj") else TP
        blocks.append(outputs[f"model.layers.{layer}.{parent}.{member}"].chunk(shards, dim=-1)[rank * shards // TP])
    return torch.cat(blocks, dim=-1)


@pytest.mark.parametrize("method", list(METHODS))
def test_each_rank_gives_its_part_of_the_one_process_output(run, method):
    _, _, references, ranks = run
    outputs, bases, adapted = references[method]
    for rank, results in enumerate(ranks):
        got = results[method]
        assert got["adapted"] == adapted
        assert got["wrapped"] == sorted({f"{name.rpartition('.')[0]}.{vllm_name(name)}" for name in adapted})
        for layer in range(len(ATTENTION)):
            for column, (parent, _) in COLUMNS.items():
                torch.testing.assert_close(got[f"model.layers.{layer}.{parent}.{column}"],
                                           rank_part(column, layer, outputs, rank), rtol=1e-5, atol=1e-5)
            for row, parent in ROWS.items():  # all-reduced: the full output on every rank
                name = f"model.layers.{layer}.{parent}.{row}"
                torch.testing.assert_close(got[name], outputs[name], rtol=1e-5, atol=1e-5)
    for name in adapted:  # the check could fail: the update moves every adapted output
        assert (outputs[name] - bases[name]).abs().max() > 1e-2, name


def test_the_mplora_reference_is_the_spec_formula(run):
    """MPLoRA's output is LoRA's, W x + b + s B A x (SPEC section 1), here on the k_proj of one kv head."""
    inputs, cases, references, _ = run
    weights, config = cases["mplora"]["weights"], cases["mplora"]["config"]
    name = "model.layers.1.self_attn.k_proj"
    a, b = (weights[f"base_model.model.{name}.mplora_{factor}.weight"] for factor in "AB")
    x = inputs["qkv_proj"]
    expected = x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"] + config.lora_alpha / config.r * x @ a.T @ b.T
    torch.testing.assert_close(references["mplora"][0][name], expected, rtol=1e-5, atol=1e-5)


def test_a_row_parallel_layer_keeping_partial_sums_is_refused(run):
    for results in run[3]:
        assert "reduce_results" in results["mor"]["reduce_results"]


@pytest.fixture(scope="module")
def served_at_tp2(tmp_path_factory, tokenizer):
    """A LoRATRF (output gate) adapter on a tiny Llama of 4 heads and 1 kv head (head size 32, one vLLM's CPU
    attention runs), exported and served by vLLM's offline engine at tensor_parallel_size=2; (its adapter folder,
    the engine's greedy completions)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from plugin.export import main as export_main

    from ..helpers import tiny_llama

    root = tmp_path_factory.mktemp("tp_engine")
    tiny_llama(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_attention_heads=4,
               num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
               initializer_range=0.1).save_pretrained(root / "base")  # 0.1: greedy tokens that vary
    tokenizer.save_pretrained(root / "base")
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"), plugin.LoRATRFConfig(
        r=4, init_weights=False, target_modules=["q_proj", "k_proj", "o_proj", "gate_proj", "down_proj"]))
    for name, param in model.named_parameters():
        if param.requires_grad and "_B." in name:
            param.data.normal_(0, 0.15)
    model.save_pretrained(root / "adapter")
    assert export_main([str(root / "adapter"), "--vllm", str(root / "folder")]) == 0
    job = root / "job.json"
    job.write_text(json.dumps({"tokens": TOKENS, "completions": COMPLETIONS, "chats": [], "tensor_parallel_size": TP}))
    proc = subprocess.run([sys.executable, "-m", "tests.vllm_serving.engine_worker", str(root / "folder"), str(job),
                           str(root / "out.json")], cwd=REPO, env=launch_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "adapter", json.loads((root / "out.json").read_text())["completions"]


def test_greedy_tokens_at_tp2_equal_peft(served_at_tp2, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter, completions = served_at_tp2
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(adapter.parent / "base"), adapter).eval()
    eos = model.generation_config.eos_token_id
    changed = False
    for prompt, got in zip(COMPLETIONS, completions):
        ids = tokenizer(prompt)["input_ids"]
        sequence = torch.tensor([ids + got])
        with torch.no_grad():  # greedy iff each token is the argmax given the ones before it (EOS suppressed)
            adapted = model(input_ids=sequence).logits[0, len(ids) - 1:-1]
            with model.disable_adapter():
                base = model(input_ids=sequence).logits[0, len(ids) - 1:-1]
        adapted[:, eos], base[:, eos] = -torch.inf, -torch.inf
        assert len(got) == TOKENS and got == adapted.argmax(-1).tolist(), prompt
        changed |= got != base.argmax(-1).tolist()
    assert changed, "the adapter changes no greedy token: the check could not fail"
