"""What the vLLM tests share: one adapter of each method on the embedded SmolLM2-135M (random B, so that it changes
the greedy tokens), each exported once with ``plugin.export --vllm``, and the greedy references from
transformers + PEFT in this process (float32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import plugin

TOKENS = 32
COMPLETIONS = ["The capital of France is", "Write a short poem about the sea.", "List three uses of a paperclip:"]
CHATS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Why is the sky blue?"}]]
# q/k/v and gate/up sit inside vLLM's fused layers: each method adapts some slices of them, not all
METHODS = {
    "mor": lambda: plugin.MoRConfig(r=4, num_experts=3, init_weights=False,
                                    target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]),
    "loratrf_output": lambda: plugin.LoRATRFConfig(r=4, init_weights=False,
                                                   target_modules=["q_proj", "k_proj", "o_proj", "gate_proj"]),
    "loratrf_input": lambda: plugin.LoRATRFConfig(r=4, trf_mode="input", init_weights=False,
                                                  target_modules=["v_proj", "up_proj", "down_proj"],
                                                  rank_pattern={"down_proj": 2}),
    "mplora": lambda: plugin.MPLoraConfig(r=4, num_paths=2, init_weights=False,
                                          target_modules=["q_proj", "v_proj", "gate_proj"],
                                          layers_to_transform=[0, 2, 5]),
}


@pytest.fixture(scope="session")
def base_dir() -> str:
    from plugin.models.embedded import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def tokenizer(base_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_dir)


@pytest.fixture(scope="session")
def adapters(base_dir, tokenizer, tmp_path_factory) -> Path:
    """root/<method>: a saved adapter of each method whose B factors are drawn (a fresh one's are zero: it would
    be the base, and equal tokens would prove nothing)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("vllm_adapters")
    for seed, (name, config) in enumerate(METHODS.items()):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), config())
        if name == "loratrf_input":  # t at the inputs' mean: the gate open (a random t keeps it near 0)
            plugin.init_task_vectors(model, {"input_ids": torch.tensor([tokenizer(COMPLETIONS[0])["input_ids"]])})
        for key, param in model.named_parameters():
            if param.requires_grad and "_B." in key:
                param.data.normal_(0, 0.15)
        model.save_pretrained(root / name)
    return root


@pytest.fixture(scope="session")
def exported(adapters, tmp_path_factory) -> dict[str, Path]:
    """method -> its folder for vLLM, written by the command."""
    from plugin.export import main as export_main

    out = tmp_path_factory.mktemp("vllm_folders")
    for name in METHODS:
        assert export_main([str(adapters / name), "--vllm", str(out / name)]) == 0
    return {name: out / name for name in METHODS}


@pytest.fixture(scope="session")
def reference(base_dir, adapters):
    """reference(method, ids, got, completion) -> (transformers + PEFT's greedy choice at each of ``got``'s
    positions, the base's (adapter off), the log-softmax of each token of ``got``), from one forward over
    ``ids + got``. ``got`` is the greedy continuation iff it equals the first: each token is the argmax given the
    ones before it. In a completion EOS is suppressed, as vLLM's ``min_tokens`` does."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    models = {}

    def forward(method: str, ids: list[int], got: list[int], completion: bool):
        if method not in models:
            base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
            models[method] = PeftModel.from_pretrained(base, adapters / method).eval()
        model, sequence = models[method], torch.tensor([ids + got])
        with torch.no_grad():
            adapted = model(input_ids=sequence).logits[0, len(ids) - 1:-1]
            with model.disable_adapter():
                base = model(input_ids=sequence).logits[0, len(ids) - 1:-1]
        logprobs = torch.log_softmax(adapted, -1).gather(1, torch.tensor(got)[:, None])[:, 0]
        if completion:
            eos = model.generation_config.eos_token_id
            adapted[:, eos], base[:, eos] = -torch.inf, -torch.inf
        return adapted.argmax(-1).tolist(), base.argmax(-1).tolist(), logprobs

    return forward
