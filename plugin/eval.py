"""``python -m plugin.eval``: lm-evaluation-harness on a base model with (or without) one of our adapters, and
``python -m plugin.eval compare RUN_DIR...``: evaluated runs side by side with paired differences. The work is
``plugin.evaluation``; this module is its command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .evaluation.compare import compare_table, load_run
from .evaluation.harness import SUITES, check_eval_settings, evaluate, parse_model_args
from .utils.errors import UserError, check_writable_folder, exits_cleanly_on_user_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m plugin.eval",
        description="Evaluate a base model, or base + MPLoRA/MoR/LoRATRF/LoRA adapter, with lm-evaluation-harness.",
        epilog="Offline: --data_dir data/eval runs the suite's tasks from local JSON Lines files. "
               "Without --adapter the base model is evaluated, for a before/after comparison: "
               "python -m plugin.eval compare BASE_OUT ADAPTER_OUT... puts evaluated runs side by side. "
               "lm-eval's own command line with our adapters: python -m plugin.lm_eval.",
    )
    p.add_argument("--base", required=True, help="base model: hub id, local folder or embedded:smollm2-135m-instruct")
    p.add_argument("--adapter", help="adapter folder (a training output_dir); omit to evaluate the base model")
    p.add_argument("--suite", help=f"task suite: {', '.join(SUITES)}")
    p.add_argument("--tasks", type=lambda s: [t for t in s.split(",") if t], help="comma-separated lm-eval tasks")
    p.add_argument("--limit", type=int, help="at most this many items per task")
    p.add_argument("--batch_size", type=int, default=8, help="items per forward pass (default 8)")
    p.add_argument("--num_fewshot", type=int, help="few-shot examples (e.g. 5 for MMLU)")
    p.add_argument("--load_in_4bit", action="store_true", help="load the base model in 4-bit (nf4)")
    p.add_argument("--bf16", action="store_true", help="load the base model in bfloat16 (GPU; halves memory)")
    p.add_argument("--model_args", help="lm-eval's spelling of the two above: dtype=bfloat16,load_in_4bit=True")
    p.add_argument("--include_path", nargs="+", action="extend", default=[], metavar="DIR",
                   help="folder(s) of your own lm-eval task YAMLs; name their tasks in --tasks")
    p.add_argument("--data_dir", help="folder of <task>.jsonl files for offline evaluation (see data/README.md)")
    p.add_argument("--apply_chat_template", action="store_true",
                   help="wrap each prompt in the tokenizer's chat template (for chat-tuned adapters)")
    p.add_argument("--output", help="folder for results.json, results.md and item_scores.json (per-item scores)")
    return p


def compare(argv: list[str]) -> int:
    """``python -m plugin.eval compare RUN_DIR...``."""
    parser = argparse.ArgumentParser(prog="python -m plugin.eval compare",
                                     description="Evaluated runs side by side; the first is the reference (e.g. the "
                                                 "base model or LoRA).")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="eval output folders (--output of plugin.eval) or training output_dirs with eval/")
    parser.add_argument("--output", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        raise UserError("compare needs at least two runs: the reference first, then the others")
    if args.output:
        check_writable_folder(Path(args.output).parent, "--output's folder")
    table = compare_table([load_run(Path(r)) for r in args.runs])
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    return 0


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return compare(argv[1:])
    args = _parser().parse_args(argv)
    loading = parse_model_args(args.model_args)
    check_eval_settings(suite=args.suite, tasks=args.tasks, limit=args.limit, num_fewshot=args.num_fewshot,
                        data_dir=args.data_dir, output=args.output, include_path=args.include_path)
    evaluate(args.base, args.adapter, suite=args.suite, tasks=args.tasks, limit=args.limit, batch_size=args.batch_size,
             num_fewshot=args.num_fewshot, load_in_4bit=args.load_in_4bit or loading["load_in_4bit"],
             bf16=args.bf16 or loading["bf16"], data_dir=args.data_dir, output=args.output,
             apply_chat_template=args.apply_chat_template, include_path=args.include_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
