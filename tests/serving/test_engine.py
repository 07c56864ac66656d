"""The batching engine in process: a request that arrives while another is generating joins the running batch at
a step boundary, and both still get exactly the tokens their adapter gives alone (plain PEFT, greedy generate)."""

from __future__ import annotations

import threading

import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from plugin.models.multi_adapter import MultiAdapterModel
from plugin.serving.engine import Engine, Request

from ..helpers import method_config


def _alone(model_dir, folder, ids, new_tokens):
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), folder).eval()
    prompt = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=new_tokens, eos_token_id=None)
    return out[0, len(ids):].tolist()


def test_a_late_request_joins_the_running_batch_and_both_stay_exact(tiny_model_dir, tmp_path):
    for seed, (name, method) in enumerate({"mor": "mor", "trf": "loratrf_input"}.items()):
        torch.manual_seed(seed)
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                       method_config(method, target_modules=["q_proj", "v_proj", "up_proj"])).save_pretrained(
            tmp_path / name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    multi = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    multi.add("mor", tmp_path / "mor")
    multi.add("trf", tmp_path / "trf")
    engine = Engine(multi, max_batch_size=4)
    engine.eos_ids = set()  # run every request to max_tokens, so the two overlap for certain
    engine.start()
    done = {name: threading.Event() for name in ("long", "late")}
    seen_running, late_sent = [], []
    late = Request("trf", tokenizer("a late question")["input_ids"], 6, tokenizer,
                   emit=lambda e: (seen_running.append(engine.running), "finish_reason" in e and done["late"].set()))

    def on_long(event):
        if len(long.generated) >= 5 and not late_sent:  # the first request is mid-answer: the second arrives now
            late_sent.append(True)
            engine.submit(late)
        if "finish_reason" in event:
            done["long"].set()

    long = Request("mor", tokenizer("the first, long answer")["input_ids"], 40, tokenizer, emit=on_long)
    try:
        engine.submit(long)
        assert done["long"].wait(120) and done["late"].wait(120)
    finally:
        engine.stop()
    assert max(seen_running) == 2  # generated side by side, not one after the other
    assert long.generated == _alone(tiny_model_dir, tmp_path / "mor", long.prompt_ids, 40)
    assert late.generated == _alone(tiny_model_dir, tmp_path / "trf", late.prompt_ids, 6)
