"""``torch.compile``: each method's eval forward compiles like LoRA's (no graph break, no recompilation past the
one for dynamic shapes), and a compiled training step (forward with its auxiliary terms, backward) equals eager."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from peft import get_peft_model
from torch._dynamo.utils import counters

from plugin.tuners.auxiliary import weighted_aux_loss

from ..helpers import METHOD_CONFIGS, method_config, tiny_llama

TARGETS = ["q_proj", "v_proj", "up_proj"]


pytestmark = pytest.mark.slow  # every test here runs a real process or a real model (docs/architecture.md)


def _compiled_eval_stats(method: str) -> tuple[dict, int]:
    torch._dynamo.reset()
    counters.clear()
    model = get_peft_model(tiny_llama(), method_config(method, target_modules=TARGETS)).eval()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        for length in (5, 7, 9, 9, 11):
            out = compiled(torch.randint(0, 100, (2, length))).logits
        eager = model(torch.zeros(2, 11, dtype=torch.long)).logits
        torch.testing.assert_close(compiled(torch.zeros(2, 11, dtype=torch.long)).logits, eager)
    assert out.shape[1] == 11
    return dict(counters["frames"]), sum(counters["graph_break"].values())


def test_the_compiled_eval_forward_is_as_whole_as_loras():
    lora_frames, lora_breaks = _compiled_eval_stats("lora")
    for method in [m for m in METHOD_CONFIGS if m != "lora"]:
        assert _compiled_eval_stats(method) == (lora_frames, lora_breaks), method


@pytest.mark.parametrize("method", [m for m in METHOD_CONFIGS if m != "lora"])
def test_a_compiled_training_step_equals_eager(method):
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))

    def step(model, forward):
        loss = forward(input_ids=ids, labels=ids).loss
        aux, _ = weighted_aux_loss(model, step=0)
        total = loss if aux is None else loss + aux
        total.backward()
        return total.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    torch._dynamo.reset()
    eager_model = get_peft_model(tiny_llama(), method_config(method, target_modules=TARGETS)).train()
    compiled_model = get_peft_model(tiny_llama(), method_config(method, target_modules=TARGETS)).train()
    compiled_model.load_state_dict(eager_model.state_dict())
    eager_loss, eager_grads = step(eager_model, eager_model)
    compiled_loss, compiled_grads = step(compiled_model, torch.compile(compiled_model, backend="aot_eager"))
    torch.testing.assert_close(compiled_loss, eager_loss)
    assert compiled_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
