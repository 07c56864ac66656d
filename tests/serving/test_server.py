"""``plugin.serve`` as users meet it: the real server process on 127.0.0.1, driven by the real ``openai`` client (and
raw HTTP where the wire format itself is the point), serving a MoR run folder trained by ``plugin.train`` beside a
LoRATRF and an MPLoRA adapter. References are computed here, independently: greedy ``model.generate`` on a
``PeftModel`` of that one adapter, and ``plugin.chat --prompt`` itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..helpers import method_config, save_adapters, write_chat_rows
from ..launches import free_port

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow  # one real server process serves every test here

METHODS = {
    "mor": lambda: method_config("mor", target_modules=["q_proj", "v_proj", "up_proj"]),
    "loratrf": lambda: method_config("loratrf_output", target_modules=["q_proj", "down_proj"]),
    "mplora": lambda: method_config("mplora", target_modules=["q_proj", "v_proj"]),
}
KEY = "sk-local-test"


class Server:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "plugin.serve", *args, "--port", str(self.port)],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "PLUGIN_API_KEY": ""})
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, "".join(self.stderr)[-3000:]
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("server did not start: " + "".join(self.stderr)[-3000:])

    def client(self, key: str = "unused") -> "openai.OpenAI":
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def raw(self, path: str, body=None, key: str | None = None, method: str | None = None) -> tuple[int, dict | str]:
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method or ("POST" if data else "GET"),
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": f"Bearer {key}"} if key else {})})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                text, status = reply.read().decode(), reply.status
        except urllib.error.HTTPError as err:
            text, status = err.read().decode(), err.code
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def running(self) -> int:
        _, text = self.raw("/metrics")
        return int(text.split("\nplugin:num_requests_running ")[1].split()[0])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = save_adapters(tiny_model_dir, tmp_path_factory.mktemp("served"),
                         {name: config for name, config in METHODS.items() if name != "mor"})
    # the MoR adapter is a plugin.train run folder (its own tokenizer and resolved config), trained a few steps
    from plugin.config import load_config
    from plugin.training.run import train

    train(load_config(None, {"base_model": str(tiny_model_dir), "adapter": "mor", "lora_r": 4, "lora_alpha": 8,
                             "mor_num_experts": 3, "datasets": [{"path": str(write_chat_rows(root / "chat.jsonl", 8)),
                                                                 "type": "messages"}],
                             "sequence_len": 128, "micro_batch_size": 2, "max_steps": 3, "learning_rate": 0.01,
                             "logging_steps": 1, "save_steps": 100, "report_to": "none",
                             "output_dir": str(root / "mor")}))
    torch.manual_seed(7)
    lora = LoraConfig(r=4, target_modules=["q_proj", "up_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora).save_pretrained(
        root / "runtime" / "lora")
    return root


@pytest.fixture(scope="module")
def server(adapters):
    served = Server(*(str(adapters / name) for name in METHODS), "--adapter-root", str(adapters / "runtime"),
                    "--max_model_len", "512")
    yield served
    served.stop()


def _generate(model_dir, adapter, ids: list[int], new_tokens: int) -> list[int]:
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    model = (PeftModel.from_pretrained(base, adapter) if adapter else base).eval()
    prompt = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=new_tokens)
    return out[0, prompt.shape[1]:].tolist()


def test_models_lists_the_base_and_each_adapter_under_it(server, tiny_model_dir):
    listed = {m.id: m for m in server.client().models.list()}
    assert set(listed) == {str(tiny_model_dir), *METHODS}
    assert all(listed[name].model_extra["parent"] == str(tiny_model_dir) for name in METHODS)
    assert "memory: one base" in "".join(server.stderr)


@pytest.mark.parametrize("method", list(METHODS))
def test_greedy_chat_equals_plugin_chat(server, adapters, capsys, method):
    from plugin.chat import main as chat_main

    assert chat_main([str(adapters / method), "--prompt", "Name a colour.", "--temperature", "0",
                      "--max_new_tokens", "12"]) == 0
    offline = capsys.readouterr().out.removesuffix("\n")
    answer = server.client().chat.completions.create(
        model=method, messages=[{"role": "user", "content": "Name a colour."}], temperature=0, max_tokens=12)
    assert answer.choices[0].message.content == offline
    assert answer.usage.completion_tokens == 12 or answer.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("method", list(METHODS))
def test_streamed_chat_equals_the_whole_answer(server, method):
    client = server.client()
    ask = dict(model=method, messages=[{"role": "user", "content": "Say something."}], temperature=0, max_tokens=10)
    whole = client.chat.completions.create(**ask).choices[0].message.content
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens >= 1


def test_text_completion_is_the_greedy_continuation(server, adapters, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = "The capital of France is"
    expected = _generate(tiny_model_dir, adapters / "mor", tokenizer(prompt)["input_ids"], 9)
    answer = server.client().completions.create(model="mor", prompt=prompt, max_tokens=9, temperature=0)
    assert answer.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True)
    assert answer.usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    assert answer.usage.completion_tokens == len(expected)


def _reference_logprobs(model_dir, adapter, ids: list[int]) -> torch.Tensor:
    """log_softmax of a PeftModel's logits over ``ids``, unbatched: row i scores token i + 1."""
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def test_echo_and_logprobs_equal_transformers_log_softmax(server, adapters, tiny_model_dir):
    """What lm-eval's local-completions asks (token ids, echo, logprobs), then chat's logprobs on another adapter."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tokenizer("The capital of France is")["input_ids"]
    answer = server.client().completions.create(model="mor", prompt=[prompt], max_tokens=4, temperature=0,
                                                logprobs=2, echo=True).choices[0]
    generated = _generate(tiny_model_dir, adapters / "mor", prompt, 4)
    reference = _reference_logprobs(tiny_model_dir, adapters / "mor", prompt + generated)
    ids = prompt + generated
    got = answer.logprobs
    assert answer.text == tokenizer.decode(prompt) + tokenizer.decode(generated, skip_special_tokens=True)
    assert got.tokens == [tokenizer.decode([t]) for t in ids] and got.token_logprobs[0] is None
    assert got.token_logprobs[1:] == pytest.approx([float(reference[i - 1, ids[i]]) for i in range(1, len(ids))],
                                                   abs=1e-4)
    for i in range(1, len(ids)):  # the two most likely tokens (and the chosen one), as vLLM lists them
        best = reference[i - 1].topk(2)
        expected = {tokenizer.decode([t]): v for t, v in zip(best.indices.tolist(), best.values.tolist())}
        expected[tokenizer.decode([ids[i]])] = float(reference[i - 1, ids[i]])
        assert got.top_logprobs[i] == pytest.approx(expected, abs=1e-4)
    # each token's offset is where its text starts in the answer (byte-level BPE: the tokens spell the prompt)
    assert answer.text.startswith("".join(got.tokens[:len(prompt)]))
    assert got.text_offset == [len("".join(got.tokens[:i])) for i in range(len(ids))]

    chat = [{"role": "user", "content": "Name a colour."}]
    reply = server.client().chat.completions.create(model="loratrf", messages=chat, temperature=0, max_tokens=5,
                                                    logprobs=True, top_logprobs=3).choices[0]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    generated = _generate(tiny_model_dir, adapters / "loratrf", list(ids), 5)
    reference = _reference_logprobs(tiny_model_dir, adapters / "loratrf", list(ids) + generated)
    content = reply.logprobs.content
    assert [c.token for c in content] == [tokenizer.decode([t]) for t in generated]
    for step, (entry, token) in enumerate(zip(content, generated)):
        row = reference[len(ids) + step - 1]
        assert entry.logprob == pytest.approx(float(row[token]), abs=1e-4)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(row.topk(3).values.tolist(), abs=1e-4)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the most likely


def test_several_prompts_and_n_choices_per_prompt(server, adapters, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = ["One plus one is", "Colours of the sky:"]
    answer = server.client().completions.create(model="mplora", prompt=prompts, n=2, max_tokens=6, temperature=0)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]  # prompt * n + sample, as vLLM numbers them
    for choice in answer.choices:
        ids = tokenizer(prompts[choice.index // 2])["input_ids"]
        assert choice.text == tokenizer.decode(_generate(tiny_model_dir, adapters / "mplora", ids, 6),
                                               skip_special_tokens=True)
    assert answer.usage.prompt_tokens == sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    sampled = dict(model="mor", prompt="Tell me", n=3, max_tokens=12, temperature=1.0, seed=11)
    first = [c.text for c in server.client().completions.create(**sampled).choices]
    assert first == [c.text for c in server.client().completions.create(**sampled).choices]  # seeded: reproducible
    assert len(set(first)) > 1  # and the n samples are not one sample repeated
    chunks = list(server.client().chat.completions.create(
        model="mor", messages=[{"role": "user", "content": "Hi"}], n=2, max_tokens=5, temperature=0, stream=True))
    texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in (0, 1)}
    assert texts[0] == texts[1] and texts[0]


def test_lm_eval_local_completions_scores_what_the_bridge_scores(server, adapters, tiny_model_dir, tmp_path,
                                                                 monkeypatch):
    """lm-eval's own API model against the server: the per-item log-likelihoods of the in-process bridge."""
    import lm_eval

    from plugin import lm_eval as wrapper
    from plugin.evaluation.harness import TEMPLATES_DIR, evaluate

    from ..helpers import FIXTURES_DIR

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    text = (TEMPLATES_DIR / "multiple_choice.yaml").read_text().replace("local_{task}", "my_arc")
    (tasks / "my_arc.yaml").write_text(text.replace("{data_file}", str(FIXTURES_DIR / "eval" / "arc_easy.jsonl")))
    captured, real = {}, lm_eval.simple_evaluate
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kw: captured.setdefault("results", real(**kw)))
    evaluate(str(tiny_model_dir), str(adapters / "mor"), tasks=["my_arc"], include_path=[str(tasks)], limit=3)
    monkeypatch.setattr(lm_eval, "simple_evaluate", real)
    bridge = {s["doc_id"]: s["filtered_resps"] for s in captured["results"]["samples"]["my_arc"]}
    monkeypatch.setattr(sys, "argv", ["pytest"])
    out = tmp_path / "out"
    assert wrapper.main(["--model", "local-completions", "--model_args",
                         f"model=mor,base_url={server.url}/v1/completions,tokenizer={tiny_model_dir},"
                         "tokenizer_backend=huggingface,max_retries=1", "--tasks", "my_arc", "--include_path",
                         str(tasks), "--limit", "3", "--log_samples", "--output_path", str(out)]) == 0
    (samples,) = out.rglob("samples_my_arc_*.jsonl")
    served = {s["doc_id"]: s["filtered_resps"] for s in map(json.loads, samples.read_text().splitlines())}
    assert sorted(served) == sorted(bridge) == [0, 1, 2]
    for doc_id, responses in bridge.items():
        for (ll_bridge, greedy_bridge), (ll_served, greedy_served) in zip(responses, served[doc_id]):
            assert float(ll_served) == pytest.approx(float(ll_bridge), abs=1e-3)
            assert str(greedy_served) == str(greedy_bridge)


def test_raw_stream_is_server_sent_events_ending_with_done(server):
    request = urllib.request.Request(f"{server.url}/v1/completions", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": "mplora", "prompt": "Hi", "max_tokens": 4,
                                                      "temperature": 0, "stream": True}).encode())
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line for line in reply.read().decode().split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_sixteen_concurrent_clients_over_three_adapters(server, adapters, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    jobs = [(list(METHODS)[i % 3], f"Question number {i}: why?") for i in range(16)]
    expected = {}
    for method, prompt in jobs:  # each adapter alone, one prompt at a time, through plain PEFT
        tokens = _generate(tiny_model_dir, adapters / method, tokenizer(prompt)["input_ids"], 8)
        expected[prompt] = tokenizer.decode(tokens, skip_special_tokens=True)
    answers = {}

    def ask(method, prompt):
        reply = server.client().completions.create(model=method, prompt=prompt, max_tokens=8, temperature=0)
        answers[prompt] = reply.choices[0].text

    threads = [threading.Thread(target=ask, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert answers == expected


def test_a_client_that_hangs_up_frees_its_row(server):
    stream = server.client().completions.create(model="mor", prompt="Tell a long story", max_tokens=480,
                                                temperature=0.8, seed=1, stream=True)
    for _, _chunk in zip(range(3), stream):
        pass
    assert server.running() == 1
    stream.close()
    deadline = time.time() + 20
    while server.running() and time.time() < deadline:
        time.sleep(0.1)
    assert server.running() == 0
    assert server.client().completions.create(model="mor", prompt="Still there?", max_tokens=3).choices[0].text


BAD = [  # (body, status, param)
    ({"model": "nope", "prompt": "x"}, 404, "model"),
    ({"model": "mor"}, 400, "prompt"),
    ({"model": "mor", "prompt": "x", "max_tokens": -5}, 400, "max_tokens"),
    ({"model": "mor", "prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"model": "mor", "prompt": "x", "n": 0}, 400, "n"),
    ({"model": "mor", "prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ({"model": "mor", "prompt": [5, 10**9]}, 400, "prompt"),  # a token id outside the vocabulary
    ({"model": "mor", "prompt": []}, 400, "prompt"),
    ({"model": "mor", "prompt": "x", "max_tokens": 10, "frobnicate": True}, 400, "frobnicate"),
    ({"model": "mor", "prompt": "word " * 600}, 400, "prompt"),  # longer than --max_model_len 512
]


@pytest.mark.parametrize("body, status, param", BAD)
def test_bad_requests_get_an_error_object(server, body, status, param):
    got, reply = server.raw("/v1/completions", body)
    assert got == status, reply
    assert set(reply["error"]) == {"message", "type", "param", "code"} and reply["error"]["param"] == param
    assert "Traceback" not in reply["error"]["message"]


def test_malformed_json_and_bad_chats_are_400(server):
    assert server.raw("/v1/chat/completions", b"{not json")[0] == 400
    assert server.raw("/v1/chat/completions", {"model": "mor", "messages": []})[0] == 400
    status, reply = server.raw("/v1/chat/completions", {"model": "mor", "messages": [{"role": "wizard", "content": 1}]})
    assert status == 400 and reply["error"]["param"].startswith("messages")
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(model="mor", messages=[{"role": "user", "content": "x"}],
                                                max_tokens=0)
    assert server.raw("/health") == (200, {"status": "ok"})  # still serving


def test_adapters_load_and_unload_at_runtime_only_under_the_root(server, adapters, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert server.raw("/v1/load_lora_adapter", {"lora_name": "late", "lora_path": "lora"}) == (
        200, {"status": "ok", "message": "adapter late loaded"})
    expected = _generate(tiny_model_dir, adapters / "runtime" / "lora", tokenizer("Hello")["input_ids"], 6)
    answer = server.client().completions.create(model="late", prompt="Hello", max_tokens=6, temperature=0)
    assert answer.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True)
    for outside in ("../mor", str(adapters / "mor")):
        status, reply = server.raw("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": outside})
        assert status == 403 and "--adapter-root" in reply["error"]["message"]
    assert server.raw("/v1/unload_lora_adapter", {"lora_name": "late"})[0] == 200
    assert server.raw("/v1/completions", {"model": "late", "prompt": "x"})[0] == 404


def test_an_api_key_guards_every_endpoint_but_health_on_a_bfloat16_server(adapters, tiny_model_dir):
    served = Server(str(adapters / "mor"), "--api-key", KEY, "--dtype", "bfloat16")
    try:
        assert served.raw("/health") == (200, {"status": "ok"})
        for key in (None, "sk-wrong"):
            status, reply = served.raw("/v1/models", key=key)
            assert status == 401 and reply["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            served.client("sk-wrong").models.list()
        assert [m.id for m in served.client(KEY).models.list()][-1] == "mor"
        # --dtype bfloat16: the base and adapter in bf16, greedy as PEFT's own bf16 model generates
        assert "bfloat16) + 1 adapters" in "".join(served.stderr)
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        ids = tokenizer("The capital of France is")["input_ids"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16),
                                          adapters / "mor").eval()
        with torch.no_grad():
            expected = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)).long(),
                                      do_sample=False, max_new_tokens=8)[0, len(ids):].tolist()
        answer = served.client(KEY).completions.create(model="mor", prompt=ids, max_tokens=8, temperature=0)
        assert answer.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True)
    finally:
        served.stop()


def test_bad_command_lines_are_one_error_line(adapters, tmp_path, tiny_model_dir, capsys):
    """In-process (the entry point itself runs in the Server fixture): each is refused before anything is served."""
    from plugin.serve import main as serve_main

    from ..helpers import make_tiny_model_dir, one_error_line

    other = make_tiny_model_dir(tmp_path / "other_base")
    get_peft_model(AutoModelForCausalLM.from_pretrained(other), METHODS["mor"]()).save_pretrained(tmp_path / "on_other")
    cases = [([str(adapters / "mor"), str(tmp_path / "on_other")], "the adapters were trained with different base "
                                                                    "models"),
             ([str(tmp_path)], "no adapter at"),
             (["--adapter", "broken"], "--adapter broken: give it as NAME=DIR")]
    for args, message in cases:
        assert message in one_error_line(capsys, lambda: serve_main(args))
