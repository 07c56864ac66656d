"""Each method under FSDP1 (use_orig_params false and true), FSDP2, DeepSpeed ZeRO-3 and QLoRA-FSDP (4-bit base) on
2 CPU processes (gloo): one SGD step, auxiliary losses on, equals the single-process step on the same global batch
(SPEC.md sections 6-7). DDP is covered through the trainer in test_train.py; reentrant checkpointing here too."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import plugin

from ..helpers import QUANTIZABLE_WIDTH, REPO, method_config, tiny_llama

ENGINES = ["fsdp1", "fsdp1_orig", "fsdp2", "qlora_fsdp1", "qlora_fsdp2", "zero3"]  # zero3 last: it hooks modules
AUX = {"mplora", "mor"}  # methods with an auxiliary loss switched on in the worker
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def _save_tiny_base(path):
    tiny_llama(vocab_size=64, hidden_size=QUANTIZABLE_WIDTH, intermediate_size=2 * QUANTIZABLE_WIDTH).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def engine_results(tmp_path_factory):
    """One torchrun launch runs every engine (each launch's start-up was most of its time)."""
    engines = [e for e in ENGINES if e != "zero3" or HAS_DEEPSPEED]
    tmp = tmp_path_factory.mktemp("engines")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO),
           "ENGINE_WORKER_4BIT_BASE": str(_save_tiny_base(tmp / "base"))}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29620", str(REPO / "tests" / "engine_worker.py"), ",".join(engines), str(tmp / "out.json")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / "out.json").read_text())


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_one_step_under_engine_equals_single_process(engine, engine_results):
    if engine == "zero3" and not HAS_DEEPSPEED:
        pytest.skip("deepspeed not installed (pip install .[deepspeed])")
    results = engine_results[engine]
    assert set(results) == {"lora", "mplora", "mor", "loratrf_output", "loratrf_input"}
    for method, result in results.items():
        assert "error" not in result, f"{method}: {result.get('trace')}"
        assert result["max_abs_diff"] <= 1e-5, (method, result)
        if method in AUX:  # the auxiliary term really entered the update
            assert result["aux_effect"] > 1e-3, (method, result)


def _checkpointed(config, use_reentrant: bool):
    from peft import get_peft_model

    model = get_peft_model(tiny_llama(), config)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.enable_input_require_grads()  # what PEFT's k-bit preparation does for checkpointing
    return model.train()


@pytest.mark.parametrize("config", [
    lambda: method_config("mplora", num_paths=2, orth_weight=1.0),
    lambda: method_config("mor", router_aux_loss_coef=1.0),
], ids=["mplora", "mor"])
def test_reentrant_checkpointing_is_refused_never_a_silent_zero(config, tokens):
    from plugin.tuners.auxiliary import AuxLossWithoutGradient

    model = _checkpointed(config(), use_reentrant=True)
    model(tokens)  # the checkpointed blocks run under no_grad: the auxiliary terms have no graph
    with pytest.raises(AuxLossWithoutGradient, match="use_reentrant': False"):
        plugin.weighted_aux_loss(model, step=0)
    model = _checkpointed(config(), use_reentrant=False)
    model(tokens)
    total, _ = plugin.weighted_aux_loss(model, step=0)
    assert total.requires_grad
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
