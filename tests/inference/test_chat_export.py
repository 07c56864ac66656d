"""Using a trained adapter: ``plugin.chat`` replies equal an independent greedy ``generate``; ``plugin.export``'s
merged model and LoRA rewrite load in a process that never imported ``plugin`` and give the adapter's logits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from plugin.chat import main as chat_main
from plugin.export import main as export_main
from plugin.inference.generation import Sampling
from plugin.inference.session import chat_session

from ..helpers import method_config, one_error_line

TOKENS = [[5, 17, 9, 33, 2, 41, 7]]
ONE_PROCESS_LOGITS = """
import sys, torch
from transformers import AutoModelForCausalLM
{load}
print(repr(model(torch.tensor({tokens})).logits.flatten()[:50].tolist()))
"""


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    for method in ("mplora", "mor", "loratrf_output"):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        get_peft_model(base, method_config(method, target_modules=["q_proj", "v_proj", "up_proj"])).save_pretrained(
            root / method)
    return root


def reference_reply(model_dir, adapter, prompt: str, new_tokens: int) -> str:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, do_sample=False, max_new_tokens=new_tokens)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("method", ["mplora", "mor", "loratrf_output"])
def test_prompt_reply_is_the_greedy_decode(tiny_model_dir, adapters, capsys, method):
    expected = reference_reply(tiny_model_dir, adapters / method, "Name a colour.", 8)
    assert chat_main([str(adapters / method), "--prompt", "Name a colour.", "--temperature", "0",
                      "--max_new_tokens", "8"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_file_replies_in_order_and_resume(tiny_model_dir, adapters, tmp_path):
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("One?", "Two?", "Three?")))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"messages": [{"role": "user", "content": "One?"}], "reply": "KEPT"}) + "\n")
    args = [str(adapters / "mor"), "--file", str(prompts), "--output", str(out), "--temperature", "0",
            "--max_new_tokens", "4", "--batch_size", "2"]
    assert chat_main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in rows] == ["One?", "Two?", "Three?"] and rows[0]["reply"] == "KEPT"
    assert all(isinstance(r["reply"], str) for r in rows)


def test_interactive_session_keeps_history_and_obeys_commands(tiny_model_dir, adapters, capsys):
    from plugin.inference.runs import load_run, resolve_run

    model, tokenizer = load_run(resolve_run(adapters / "mor"))
    lines = iter(["Hello", "/system Be brief.", "Hi again", "/exit"])
    seen = []
    original = tokenizer.apply_chat_template

    def spy(messages, *args, **kwargs):
        seen.append([m["role"] for m in messages])
        return original(messages, *args, **kwargs)

    tokenizer.apply_chat_template = spy
    chat_session(model, tokenizer, Sampling(max_new_tokens=3, temperature=0), read=lambda _: next(lines))
    assert seen == [["user"], ["system", "user"]]  # /system reset the history and set the prompt
    assert capsys.readouterr().out.count("assistant> ") == 2


def _logits_in_a_plain_process(load: str, *paths) -> list[float]:
    code = ONE_PROCESS_LOGITS.format(load=load, tokens=TOKENS)
    proc = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "plugin" not in proc.stderr
    return eval(proc.stdout.strip().splitlines()[-1])


def _adapter_logits(model_dir, adapter) -> list[float]:
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.flatten()[:50].tolist()


@pytest.mark.slow
def test_merged_mplora_loads_without_plugin_with_the_same_logits(tiny_model_dir, adapters, tmp_path):
    out = tmp_path / "merged"
    assert export_main([str(adapters / "mplora"), "--merge", str(out)]) == 0
    got = _logits_in_a_plain_process("model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()", out)
    assert torch.allclose(torch.tensor(got), torch.tensor(_adapter_logits(tiny_model_dir, adapters / "mplora")),
                          atol=1e-4)
    assert (out / "tokenizer_config.json").is_file() and not list(tmp_path.glob(".merged.*"))


@pytest.mark.slow
def test_mplora_as_lora_loads_in_plain_peft_with_the_same_logits(tiny_model_dir, adapters, tmp_path):
    out = tmp_path / "as_lora"
    assert export_main([str(adapters / "mplora"), "--as-lora", str(out)]) == 0
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    load = ("from peft import PeftModel\n"
            "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[1]), sys.argv[2]).eval()")
    got = _logits_in_a_plain_process(load, tiny_model_dir, out)
    assert torch.allclose(torch.tensor(got), torch.tensor(_adapter_logits(tiny_model_dir, adapters / "mplora")),
                          atol=1e-5)


def test_as_lora_keeps_patterns_and_expert_tensors(tmp_path):
    """An MPLoRA adapter with per-layer ranks and alphas and MoE expert tensors (target_parameters) becomes a LoRA
    adapter with the same logits in plain PEFT."""
    from transformers import MixtralConfig, MixtralForCausalLM

    def mixtral():
        torch.manual_seed(0)
        return MixtralForCausalLM(MixtralConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                                vocab_size=100, num_attention_heads=2, num_key_value_heads=2,
                                                num_local_experts=4)).eval()

    config = method_config("mplora", num_paths=2, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 2},
                           alpha_pattern={"layers.1.self_attn.q_proj": 40},
                           target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    adapter = get_peft_model(mixtral(), config).eval()
    ids = torch.tensor(TOKENS)
    expected = adapter(ids).logits
    adapter.save_pretrained(tmp_path / "mplora")
    mixtral().save_pretrained(tmp_path / "base")
    assert export_main([str(tmp_path / "mplora"), "--as-lora", str(tmp_path / "lora"),
                        "--base", str(tmp_path / "base")]) == 0
    lora = PeftModel.from_pretrained(mixtral(), tmp_path / "lora").eval()
    assert lora.peft_config["default"].peft_type == "LORA"
    torch.testing.assert_close(lora(ids).logits, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method,flag", [("mor", "--merge"), ("loratrf_output", "--as-lora")])
def test_token_dependent_methods_are_refused_with_the_reason(adapters, tmp_path, capsys, method, flag):
    line = one_error_line(capsys, lambda: export_main([str(adapters / method), flag, str(tmp_path / "o")]))
    assert "depends on each token" in line and "plugin.chat" in line and not (tmp_path / "o").exists()


def test_a_non_empty_output_is_never_written_into(adapters, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    line = one_error_line(capsys, lambda: export_main([str(adapters / "mplora"), "--as-lora", str(out)]))
    assert "exists and is not empty; pass --overwrite" in line and (out / "notes.txt").read_text() == "keep"
