"""``python -m plugin.lm_eval ARGS`` (``plugin-lm-eval``): lm-evaluation-harness's own command line in a process
where MPLoRA, MoR and LoRATRF are registered with PEFT, so ``--model hf --model_args pretrained=BASE,peft=ADAPTER``
loads our adapters. The arguments are lm-eval's; ``plugin.evaluation.lm_eval_cli`` checks them first."""

from __future__ import annotations

import sys

from .evaluation.lm_eval_cli import run_harness_cli
from .utils.errors import exits_cleanly_on_user_error


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    return run_harness_cli(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
