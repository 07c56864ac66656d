"""``python -m plugin.export RUN_OR_ADAPTER [--merge OUT | --as-lora OUT | --vllm OUT] [--push_to_hub REPO]``: a
trained adapter in forms that load without this package — a merged full model (MPLoRA, LoRA) or a PEFT LoRA adapter
(MPLoRA) — or as one folder vLLM serves (every method; this package installed beside vLLM), and shared on the Hugging
Face Hub. MoR and LoRATRF, whose update depends on each token, are refused the first two with the reason; pushed as
they are, their model card says how to load them. The work is ``plugin.inference.export`` and
``plugin.integrations.vllm.folder``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .inference.export import as_lora, merge
from .inference.runs import resolve_run
from .integrations.vllm.folder import write_folder
from .models.hub import check_can_push, push_folder
from .utils.errors import UserError, exits_cleanly_on_user_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plugin.export", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("run", metavar="RUN_OR_ADAPTER", help="a plugin.train output_dir or an adapter folder")
    p.add_argument("--merge", metavar="OUT", help="write the base with the adapter merged in (plain transformers "
                                                  "loads it; the same logits as the adapter)")
    p.add_argument("--as-lora", dest="as_lora", metavar="OUT",
                   help="write an MPLoRA adapter as a PEFT LoRA adapter (for vLLM, TGI, llama.cpp and every LoRA tool)")
    p.add_argument("--vllm", metavar="OUT",
                   help="write the base and the adapter as one model vLLM serves (MoR, LoRATRF, MPLoRA; vLLM with "
                        "this package installed: scripts/setup_vllm.sh), with a model card saying how")
    p.add_argument("--base", help="base model (default: the run's, else the adapter's base_model_name_or_path)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT folder")
    p.add_argument("--push_to_hub", metavar="REPO", help="upload to the hub repo owner/name (created if missing) in "
                   "one commit: the export when --merge / --as-lora is given, else the adapter with its model card; "
                   "needs HF_TOKEN or `hf auth login` (HF_ENDPOINT picks another hub)")
    p.add_argument("--private", action="store_true", help="create the hub repo as private")
    return p


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    exports = [flag for flag in ("merge", "as_lora", "vllm") if getattr(args, flag)]
    if len(exports) > 1 or not (exports or args.push_to_hub):
        raise UserError("pass one of --merge OUT (a full model), --as-lora OUT (a PEFT LoRA adapter) or --vllm OUT "
                        "(a folder vLLM serves), and/or --push_to_hub REPO")
    if args.push_to_hub:
        check_can_push(args.push_to_hub)  # before a merge that may take minutes
    run = resolve_run(args.run, args.base)
    out = run.folder
    if args.merge:
        out = merge(run, Path(args.merge), args.overwrite)
    elif args.as_lora:
        out = as_lora(run, Path(args.as_lora), args.overwrite)
    elif args.vllm:
        out = write_folder(run.folder, Path(args.vllm), args.base, args.overwrite)
    if exports:
        print(f"written to {out}")
    if args.push_to_hub:
        what = "merged model" if args.merge else "vLLM model" if args.vllm else "adapter"
        print(push_folder(out, args.push_to_hub, args.private, what))
    return 0


if __name__ == "__main__":
    sys.exit(main())
