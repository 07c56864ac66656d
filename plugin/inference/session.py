"""The interactive terminal chat: replies stream as they are generated, the history is kept; ``/reset``,
``/system TEXT`` and ``/exit``; Ctrl-C stops the answer being written, not the session."""

from __future__ import annotations

import sys

from .generation import Sampling, reply

HELP = "commands: /reset (forget the chat), /system TEXT (set the system prompt and reset), /exit; Ctrl-C stops an answer"


def chat_session(model, tokenizer, sampling: Sampling, system: str | None = None, read=input) -> None:
    from transformers import TextStreamer

    history: list[dict] = []
    print(HELP, file=sys.stderr)
    while True:
        try:
            text = read("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        command, _, argument = text.strip().partition(" ")
        if command == "/exit":
            return
        if command in ("/reset", "/system"):
            system = argument.strip() or None if command == "/system" else system
            history = []
            print(f"(chat reset{'; system prompt set' if command == '/system' else ''})", file=sys.stderr)
            continue
        if not text.strip():
            continue
        messages = ([{"role": "system", "content": system}] if system else []) + history + [
            {"role": "user", "content": text}]
        print("assistant> ", end="", flush=True)
        try:
            answer = reply(model, tokenizer, messages, sampling,
                           streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True))
        except KeyboardInterrupt:
            print("\n(stopped; this turn is not kept)", file=sys.stderr)
            continue
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
