"""vLLM's offline engine (``vllm.LLM``, float32) over folders written by ``plugin.export --vllm`` gives the greedy
tokens of transformers + PEFT for LoRATRF (both gate modes) and MPLoRA, on completions and chats. MoR is checked
through the server (test_server.py). Each folder gets its own engine process, two at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..helpers import REPO
from .conftest import CHATS, COMPLETIONS, TOKENS

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

ENGINE_METHODS = ["loratrf_output", "loratrf_input", "mplora"]


@pytest.fixture(scope="module")
def vllm_tokens(exported, tmp_path_factory) -> dict[str, dict]:
    """method -> {"completions": [...], "chats": [...]}: vLLM's greedy token ids."""
    tmp = tmp_path_factory.mktemp("engine")
    job = tmp / "prompts.json"
    job.write_text(json.dumps({"tokens": TOKENS, "completions": COMPLETIONS, "chats": CHATS}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two engines side by side on two cores
    results, pending = {}, list(ENGINE_METHODS)
    while pending:
        batch, pending = pending[:2], pending[2:]
        worker = "tests.vllm_serving.engine_worker"
        procs = {m: subprocess.Popen([sys.executable, "-m", worker, str(exported[m]), str(job),
                                      str(tmp / f"{m}.json")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True) for m in batch}
        for method, proc in procs.items():
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            results[method] = json.loads((tmp / f"{method}.json").read_text())
    return results


@pytest.mark.parametrize("method", ENGINE_METHODS)
def test_greedy_completions_equal_peft(vllm_tokens, reference, tokenizer, method):
    changed = False
    for prompt, got in zip(COMPLETIONS, vllm_tokens[method]["completions"]):
        greedy, base, _ = reference(method, tokenizer(prompt)["input_ids"], got, completion=True)
        assert len(got) == TOKENS and got == greedy, (prompt, tokenizer.decode(got))
        changed |= greedy != base
    assert changed, "the adapter changes no greedy token: the check could not fail"


@pytest.mark.parametrize("method", ENGINE_METHODS)
def test_greedy_chats_equal_peft(vllm_tokens, reference, tokenizer, method):
    for messages, got in zip(CHATS, vllm_tokens[method]["chats"]):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        greedy, _, _ = reference(method, ids["input_ids"], got, completion=False)
        assert got == greedy, (messages, tokenizer.decode(got))
        assert len(got) == TOKENS or got[-1] == tokenizer.eos_token_id
