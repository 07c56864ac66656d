"""Each method under FSDP1 (use_orig_params false and true), FSDP2, DeepSpeed ZeRO-3 and QLoRA-FSDP (4-bit base) on
2 CPU processes (gloo): one SGD step, auxiliary losses on, equals the single-process step on the same global batch
(SPEC.md sections 6-7). DDP is covered through the trainer in test_train.py; reentrant checkpointing here too."""

import pytest

import plugin

from ..helpers import method_config, tiny_llama
from ..launches import ENGINES

AUX = {"mplora", "mor"}  # methods with an auxiliary loss switched on in the worker


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_one_step_under_engine_equals_single_process(engine, torchrun_launch):
    results = torchrun_launch.engines[engine]
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
