"""lm-evaluation-harness's own command line (``python -m plugin.lm_eval``), run in a process
where MPLoRA, MoR and LoRATRF are registered with PEFT, so ``--model hf --model_args pretrained=BASE,peft=ADAPTER``
loads our adapters through lm-eval's own ``PeftModel.from_pretrained`` call.

The arguments are lm-eval's, parsed and executed by lm-eval's CLI (as ``lm_eval.__main__`` does). Between the two,
what a user can get wrong is checked so it is one line, not a traceback from deep inside lm-eval: the ``peft=``
folder, the task folders of ``--include_path``; PEFT's warning about adapter weights missing from the file (the
adapter would be scored as the bare base) stops the run. ``pretrained=embedded:smollm2-135m-instruct`` names the
embedded model, as everywhere in this package.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ..models.adapter_io import read_adapter_config, read_adapter_weights
from ..models.loader import resolve_model_path
from ..utils.errors import UserError, first_line
from .harness import check_task_folder


def check_run_args(args) -> None:
    """Check (and resolve) a parsed ``lm-eval run`` namespace before lm-eval loads anything."""
    model_args = args.model_args if isinstance(args.model_args, dict) else {}
    if str(model_args.get("pretrained", "")).startswith("embedded:"):
        model_args["pretrained"] = str(resolve_model_path(model_args["pretrained"]))
    if model_args.get("peft"):
        adapter = Path(str(model_args["peft"]))
        read_adapter_config(adapter)
        read_adapter_weights(adapter)
    for folder in [args.include_path] if isinstance(args.include_path, str) else args.include_path or []:
        check_task_folder(folder)


def run_harness_cli(argv: list[str]) -> int:
    """lm-eval's CLI on ``argv``, with its arguments checked first and PEFT's partial-load warning made an error."""
    from lm_eval._cli import HarnessCLI  # the class lm_eval.__main__.cli_evaluate drives
    from lm_eval.utils import setup_logging

    sys.argv = ["plugin-lm-eval", *argv]
    setup_logging()
    cli = HarnessCLI()
    args = cli.parse_args()
    if getattr(args, "command", None) == "run":
        check_run_args(args)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Found missing adapter keys")  # PEFT's wording, kept stable there
        try:
            cli.execute(args)
        except UserWarning as err:
            raise UserError(f"adapter {args.model_args.get('peft')} does not load completely ({first_line(err, 160)}); "
                            "is its peft_type the method it was trained with?") from None
        except RuntimeError as err:
            if "size mismatch" not in str(err):
                raise
            raise UserError(f"adapter {args.model_args.get('peft')} does not fit the base model "
                            f"{args.model_args.get('pretrained')} (trained for another model?): {first_line(err)}") from None
    return 0
