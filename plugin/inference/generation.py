"""Replies from a loaded adapter: one chat turn (streamed or not), or a JSONL file of prompts in batches.

Generation is transformers' ``generate`` on the PEFT model in eval mode without gradients, so the methods take
their inference path (MoR's folded expert matrix, LoRATRF's stacked gate)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.errors import UserError


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0: greedy
    top_p: float = 1.0

    def generate_kwargs(self, tokenizer) -> dict:
        chosen = {"do_sample": False} if self.temperature == 0 else {
            "do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        return {"max_new_tokens": self.max_new_tokens, "pad_token_id": tokenizer.pad_token_id, **chosen}

    def check(self) -> None:
        if self.max_new_tokens <= 0:
            raise UserError(f"--max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0 (0: greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top_p must be in (0, 1], got {self.top_p}")


def _prompt_ids(tokenizer, messages: list[dict], device) -> torch.Tensor:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return ids["input_ids"].to(device)


def reply(model, tokenizer, messages: list[dict], sampling: Sampling, streamer=None) -> str:
    """The assistant's next turn after ``messages``: the decode (special tokens skipped) of what ``generate``
    returns after the chat-template prompt."""
    prompt = _prompt_ids(tokenizer, messages, model.device)
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), streamer=streamer,
                             **sampling.generate_kwargs(tokenizer))
    return tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)


def read_prompts(path: Path, system: str | None) -> list[list[dict]]:
    """Rows of a JSONL file as chats: ``messages`` (OpenAI style, up to the user's turn) or ``prompt`` (text)."""
    if not path.is_file():
        raise UserError(f"--file {path}: no such file")
    chats = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"--file {path} line {number} is not JSON") from None
        if isinstance(row, dict) and isinstance(row.get("messages"), list) and row["messages"]:
            chats.append(row["messages"])
        elif isinstance(row, dict) and isinstance(row.get("prompt"), str):
            chats.append(([{"role": "system", "content": system}] if system else []) +
                         [{"role": "user", "content": row["prompt"]}])
        else:
            raise UserError(f"--file {path} line {number} holds neither 'messages' (a list) nor 'prompt' (text)")
    return chats


def generate_file(model, tokenizer, chats: list[list[dict]], output: Path, sampling: Sampling,
                  batch_size: int = 8) -> None:
    """One output row per input row, in order, each ``{messages, reply}``; rows already in ``output`` (an earlier,
    interrupted run) are kept and skipped. Left-padded batches; tokens/s said at the end."""
    from tqdm import tqdm

    done = len(output.read_text(encoding="utf-8").splitlines()) if output.is_file() else 0
    if done > len(chats):
        raise UserError(f"--output {output} has {done} rows but the input only {len(chats)}: another file?")
    tokenizer.padding_side = "left"
    new_tokens, start = 0, time.perf_counter()
    with output.open("a", encoding="utf-8") as out, tqdm(total=len(chats), initial=done, desc="generating",
                                                          file=sys.stderr) as bar:
        for first in range(done, len(chats), batch_size):
            batch = chats[first: first + batch_size]
            texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in batch]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                generated = model.generate(**encoded, **sampling.generate_kwargs(tokenizer))
            answers = generated[:, encoded["input_ids"].shape[1]:]
            for chat, answer in zip(batch, answers):
                new_tokens += int((answer != tokenizer.pad_token_id).sum())
                text = tokenizer.decode(answer, skip_special_tokens=True)
                out.write(json.dumps({"messages": chat, "reply": text}, ensure_ascii=False) + "\n")
            out.flush()  # a killed run keeps every finished batch
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    print(f"{len(chats) - done} replies, {new_tokens} new tokens in {seconds:.1f} s "
          f"({new_tokens / max(seconds, 1e-9):.1f} tokens/s); written to {output}", file=sys.stderr)
