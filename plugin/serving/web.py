"""The web chat page of ``python -m plugin.chat RUN [RUN ...] --web``: gradio's chat interface (what Axolotl's and
LLaMA-Factory's web chats use) over the same engine as ``plugin.serve``, so the adapters given and the base share
one model, replies stream as they are generated, and two browser tabs talking to different adapters are batched.
An optional extra: ``pip install "plugin[web]"``."""

from __future__ import annotations

import queue
import sys

from ..utils.errors import UserError
from .engine import Engine, Request
from .registry import Registry


def _text(content) -> str:
    """A chat message's text: gradio gives a string, or a list of parts."""
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content or "")


def build_page(registry: Registry, engine: Engine, max_model_len: int, defaults: dict):
    try:
        import gradio as gr
    except ImportError:
        raise UserError("--web needs gradio: pip install 'plugin[web]'") from None
    names = [m for m in registry.models if m != registry.base_id] + [registry.base_id]

    def respond(message, history, model, system, temperature, top_p, max_new_tokens):
        served = registry.get(model)
        chat = ([{"role": "system", "content": system}] if system else []) + [
            {"role": turn["role"], "content": _text(turn["content"])} for turn in history] + [
            {"role": "user", "content": _text(message)}]
        ids = list(served.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])
        room = max_model_len - len(ids)
        if room <= 0:
            raise gr.Error(f"the chat is longer than the model's {max_model_len} tokens; clear it and start again")
        events: queue.Queue = queue.Queue()
        job = Request(served.adapter, ids, min(int(max_new_tokens), room), served.tokenizer, emit=events.put,
                      temperature=float(temperature), top_p=float(top_p))
        engine.submit(job)
        reply = ""
        try:
            while True:
                event = events.get()
                if "error" in event:
                    raise gr.Error(event["error"])
                reply += event.get("text", "")
                if "finish_reason" in event:
                    break
                yield reply
            yield reply
        finally:
            job.cancel()  # the stop button, or a closed tab: the row leaves the batch

    inputs = [
        gr.Dropdown(names, value=names[0], label="adapter (or the base model)"),
        gr.Textbox(defaults.get("system") or "", label="system prompt"),
        gr.Slider(0, 2, value=defaults["temperature"], step=0.05, label="temperature (0: greedy)"),
        gr.Slider(0.05, 1, value=defaults["top_p"], step=0.05, label="top_p"),
        gr.Slider(1, max_model_len, value=defaults["max_new_tokens"], step=1, label="max new tokens"),
    ]
    return gr.ChatInterface(respond, additional_inputs=inputs, title="plugin.chat",
                            chatbot=gr.Chatbot(render_markdown=False, label="chat"),
                            additional_inputs_accordion=gr.Accordion("generation settings", open=True),
                            analytics_enabled=False, flagging_mode="never", save_history=False)


def serve_page(registry: Registry, engine: Engine, max_model_len: int, defaults: dict, host: str, port: int) -> None:
    page = build_page(registry, engine, max_model_len, defaults)
    print(f"chat page on http://{host}:{port}/ ({', '.join(registry.models)})", file=sys.stderr, flush=True)
    try:
        page.queue(default_concurrency_limit=None).launch(server_name=host, server_port=port, share=False,
                                                          show_error=True, quiet=True)
    finally:
        engine.stop()
