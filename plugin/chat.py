"""``python -m plugin.chat RUN_OR_ADAPTER``: talk to a trained adapter (any method) — an interactive terminal chat,
one reply (``--prompt``), replies to a JSONL file of prompts (``--file``), or a web chat page (``--web``, several
adapters and the base to switch between). The work is ``plugin.inference`` (and ``plugin.serving.web``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .inference.generation import Sampling, generate_file, read_prompts, reply
from .inference.runs import load_run, resolve_run
from .inference.session import chat_session
from .serving.server import prepare
from .serving.web import serve_page
from .utils.errors import UserError, check_writable_folder, exits_cleanly_on_user_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plugin.chat", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("runs", nargs="+", metavar="RUN_OR_ADAPTER",
                   help="a plugin.train output_dir (base model, 4-bit and tokenizer from the run) or an adapter folder; "
                        "with --web, several (on one base)")
    p.add_argument("--base", help="base model (default: the run's, else the adapter's base_model_name_or_path); "
                                  "embedded:smollm2-135m-instruct works")
    p.add_argument("--load_in_4bit", action="store_true", default=None, help="load the base in 4 bits (nf4)")
    p.add_argument("--prompt", help="one user message: print the reply on stdout and exit")
    p.add_argument("--file", help="JSONL of 'messages' or 'prompt' rows: one reply per row into --output")
    p.add_argument("--output", help="with --file: the JSONL the replies go to (resumable: rows already there are kept)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max_new_tokens", type=int, default=256, help="longest reply in tokens (default 256)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0: greedy (default 0.7)")
    p.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling (default 0)")
    p.add_argument("--batch_size", type=int, default=8, help="with --file: prompts generated together (default 8)")
    p.add_argument("--web", action="store_true",
                   help="serve a chat page (gradio: pip install 'plugin[web]'): streamed replies, generation "
                        "settings, a switch between the adapters given and the base")
    p.add_argument("--host", default="127.0.0.1", help="with --web: address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="with --web: port (default 7860)")
    return p


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p)
    sampling.check()
    if args.prompt is not None and args.file:
        raise UserError("--prompt and --file both ask for replies; pass one")
    if bool(args.file) != bool(args.output):
        raise UserError("--file and --output go together: replies to a file of prompts go to a JSONL file")
    chats = read_prompts(Path(args.file), args.system) if args.file else None
    if args.output:
        check_writable_folder(Path(args.output).parent, "--output's folder")
    if args.web:
        if args.prompt is not None or args.file:
            raise UserError("--web serves a page; --prompt and --file answer on the command line: pass one")
        registry, engine, max_model_len = prepare({Path(r).resolve().name: Path(r) for r in args.runs}, args.base,
                                                  args.load_in_4bit, max_batch_size=8, max_model_len=None,
                                                  adapter_root=None)
        serve_page(registry, engine, max_model_len, {"system": args.system, "temperature": args.temperature,
                                                     "top_p": args.top_p, "max_new_tokens": args.max_new_tokens},
                   args.host, args.port)
        return 0
    if len(args.runs) > 1:
        raise UserError("several adapters at once are for --web (or plugin.serve); name one here")
    run = resolve_run(args.runs[0], args.base, args.load_in_4bit)
    from transformers import set_seed

    set_seed(args.seed)
    model, tokenizer = load_run(run)
    if args.prompt is not None:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": args.prompt}]
        print(reply(model, tokenizer, messages, sampling))
    elif chats is not None:
        generate_file(model, tokenizer, chats, Path(args.output), sampling, args.batch_size)
    else:
        chat_session(model, tokenizer, sampling, args.system)
    return 0


if __name__ == "__main__":
    sys.exit(main())
