"""``python -m plugin.serve RUN --engine vllm`` as users meet it: it exports the MoR adapter into its cache and execs
vLLM's OpenAI server (float32 and eager through ``--``), driven here by the real ``openai`` client on 127.0.0.1.
Greedy token ids (``return_tokens_as_token_ids``) equal transformers + PEFT's, their logprobs transformers'
log-softmax, the chat answer ``plugin.chat``'s; streaming gives the whole answer; the API key is enforced."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import torch

from ..helpers import REPO
from ..launches import free_port
from .conftest import COMPLETIONS, TOKENS

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

KEY = "sk-vllm-test"
VLLM_ARGS = ["--dtype", "float32", "--enforce-eager", "--distributed-executor-backend", "uni"]


@pytest.fixture(scope="module")
def server(adapters, tmp_path_factory):
    port = free_port()
    env = {**os.environ, "PLUGIN_CACHE": str(tmp_path_factory.mktemp("cache")), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "plugin.serve", str(adapters / "mor"), "--engine", "vllm",
                             "--port", str(port), "--api-key", KEY, "--max_model_len", "512", "--", *VLLM_ARGS],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None and time.time() < deadline, "".join(log)[-3000:]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=300), log
    proc.terminate()
    proc.wait(timeout=60)


def test_serves_the_adapter_under_its_name_behind_the_key(server):
    client, log = server
    assert [m.id for m in client.models.list()] == ["mor"]
    assert "exporting" in "".join(log)  # into the cache, then vLLM's server on it
    with pytest.raises(openai.AuthenticationError):
        client.with_options(api_key="wrong").models.list()


def test_greedy_completions_and_their_logprobs_equal_transformers(server, reference, tokenizer):
    client, _ = server
    changed = False
    for prompt in COMPLETIONS:
        answer = client.completions.create(model="mor", prompt=prompt, max_tokens=TOKENS, temperature=0, logprobs=1,
                                           extra_body={"min_tokens": TOKENS, "return_tokens_as_token_ids": True})
        choice = answer.choices[0]
        got = [int(token.removeprefix("token_id:")) for token in choice.logprobs.tokens]
        greedy, base, logprobs = reference("mor", tokenizer(prompt)["input_ids"], got, completion=True)
        assert len(got) == TOKENS and got == greedy, (prompt, choice.text)
        assert choice.text == tokenizer.decode(got, skip_special_tokens=True)
        assert torch.allclose(torch.tensor(choice.logprobs.token_logprobs), logprobs, atol=1e-3, rtol=0), prompt
        changed |= greedy != base
    assert changed, "the adapter changes no greedy token: the check could not fail"


def test_greedy_chat_equals_plugin_chat(server, adapters, capsys):
    from plugin.chat import main as chat_main

    client, _ = server
    question = "Name a colour."
    assert chat_main([str(adapters / "mor"), "--prompt", question, "--temperature", "0",
                      "--max_new_tokens", str(TOKENS)]) == 0
    offline = capsys.readouterr().out.removesuffix("\n")
    answer = client.chat.completions.create(model="mor", messages=[{"role": "user", "content": question}],
                                            temperature=0, max_tokens=TOKENS)
    assert answer.choices[0].message.content == offline


def test_streams_equal_the_whole_answers(server):
    client, _ = server
    ask = dict(model="mor", messages=[{"role": "user", "content": "Say something."}], temperature=0, max_tokens=12)
    whole = client.chat.completions.create(**ask).choices[0].message.content
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].usage.completion_tokens >= 1
    text = dict(model="mor", prompt=COMPLETIONS[1], temperature=0, max_tokens=12)
    whole = client.completions.create(**text).choices[0].text
    assert "".join(c.choices[0].text for c in client.completions.create(**text, stream=True) if c.choices) == whole
