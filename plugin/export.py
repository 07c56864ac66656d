"""``python -m plugin.export RUN_OR_ADAPTER --merge OUT | --as-lora OUT``: a trained adapter in forms that load
without this package — a merged full model (MPLoRA, LoRA) or a PEFT LoRA adapter (MPLoRA). MoR and LoRATRF, whose
update depends on each token, are refused with the reason. The work is ``plugin.inference.export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .inference.export import as_lora, merge
from .inference.runs import resolve_run
from .utils.errors import UserError, exits_cleanly_on_user_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plugin.export", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("run", metavar="RUN_OR_ADAPTER", help="a plugin.train output_dir or an adapter folder")
    p.add_argument("--merge", metavar="OUT", help="write the base with the adapter merged in (plain transformers "
                                                  "loads it; the same logits as the adapter)")
    p.add_argument("--as-lora", dest="as_lora", metavar="OUT",
                   help="write an MPLoRA adapter as a PEFT LoRA adapter (for vLLM, TGI, llama.cpp and every LoRA tool)")
    p.add_argument("--base", help="base model (default: the run's, else the adapter's base_model_name_or_path)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT folder")
    return p


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if bool(args.merge) == bool(args.as_lora):
        raise UserError("pass one of --merge OUT (a full model) or --as-lora OUT (a PEFT LoRA adapter)")
    run = resolve_run(args.run, args.base)
    out = merge(run, Path(args.merge), args.overwrite) if args.merge else as_lora(run, Path(args.as_lora), args.overwrite)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
