"""``python -m plugin.train CONFIG.yaml [--key value ...]``: fine-tune a causal LM (or, with ``task:
sequence_classification``, a sequence classifier) with LoRA, MPLoRA, MoR or LoRATRF, then run the config's ``eval:``
section. Works the same under ``accelerate launch -m plugin.train`` and ``torchrun -m plugin.train``. The run itself
is ``plugin.training.run``; this module is its command line."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import yaml

from .config import load_config, parse_override, to_dict
from .config.reference import help_text, markdown
from .data.preview import preview_data
from .evaluation.harness import evaluate_from_train_config
from .models.hub import push_folder
from .training.card import add_eval_section
from .training.run import train
from .utils.errors import UserError, exits_cleanly_on_user_error, interrupts_stop_the_run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m plugin.train",
        description="Fine-tune a causal LM (or a sequence classifier: task: sequence_classification) with LoRA, "
                    "MPLoRA, MoR or LoRATRF from an Axolotl-style YAML. Multi-process: accelerate launch -m "
                    "plugin.train CONFIG, or torchrun -m plugin.train CONFIG.",
        epilog=help_text() + "\n\nAny key can be overridden on the command line: --lora_r 16 --adapter mor.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", nargs="?", help="training YAML (see configs/)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--config-reference", action="store_true",
                        help="print the configuration reference (docs/configuration.md) and exit")
    parser.add_argument("--preview-data", type=int, metavar="N",
                        help="show the first N training rows as the trainer sees them, trained tokens marked; "
                             "nothing is trained or written")
    parser.add_argument("--json", action="store_true",
                        help="with --preview-data: one JSON object per row with input_ids and labels (-100: no loss)")
    return parser


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    # transformers 5.2x renames gradient_checkpointing -> activation_checkpointing; the old names are the ones
    # every supported version (down to 5.16) accepts, so their deprecation notice is noise here
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)
    args, rest = _parser().parse_known_args(argv)
    if args.config_reference:
        print(markdown())
        return 0
    if args.config is None:
        raise UserError("no config: python -m plugin.train CONFIG.yaml (examples in configs/; --help lists the keys)")
    cfg = load_config(args.config, parse_override(rest))
    if args.json and args.preview_data is None:
        raise UserError("--json goes with --preview-data N")
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    if args.preview_data is not None:
        preview_data(cfg, args.preview_data, as_json=args.json)
        return 0
    with interrupts_stop_the_run():
        try:
            out = train(cfg)
        except KeyboardInterrupt:
            raise UserError(f"interrupted; rerun the same command to resume {cfg.output_dir} from its last "
                            f"checkpoint (every save_steps={cfg.save_steps} steps)") from None
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
        try:  # what follows a finished run in the main process: the summary, the config's eval: section, the push
            if cfg.task == "sequence_classification":
                metrics = out / "eval_metrics.json"
                print(f"\n{'model' if cfg.adapter == 'full' else 'adapter and classifier head'} saved to {out}"
                      + (f"\nheld-out metrics: {metrics.read_text()}" if metrics.is_file() else ""))
            else:
                print(f"\nadapter saved to {out}\nevaluate it with:\n  python -m plugin.eval --base {cfg.base_model} "
                      f"--adapter {out} --data_dir data/eval --suite commonsense --limit 100")
                if cfg.eval is not None:
                    add_eval_section(out, evaluate_from_train_config(cfg, out))
            if cfg.hub_model_id:
                push_folder(out, cfg.hub_model_id, cfg.hub_private_repo)
        except KeyboardInterrupt:
            raise UserError(f"interrupted after training: the finished adapter is in {out}; evaluate it with "
                            "python -m plugin.eval, or push it with python -m plugin.export --push_to_hub") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
