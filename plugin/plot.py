"""``python -m plugin.plot OUT_DIR``: pictures of a training run (MoR router weights and entropy, MPLoRA
orthogonality, the rewards of a preference or RL run), drawn by ``plugin.evaluation.plots``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .evaluation.plots import DEFAULT_TEXTS, write_plots
from .utils.errors import exits_cleanly_on_user_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plugin.plot", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("out_dir", help="a training output_dir")
    p.add_argument("--layer", help="MoR layer: index among MoR layers or a name suffix (default: the middle one)")
    p.add_argument("--texts", default=str(DEFAULT_TEXTS), help="JSONL (question/text field) or plain text file")
    p.add_argument("--num_texts", type=int, default=32, help="how many texts the router weights are read on")
    p.add_argument("--output", help="folder for the PNGs (default: OUT_DIR/plots)")
    return p


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for path in write_plots(Path(args.out_dir), Path(args.output) if args.output else None, args.layer,
                            Path(args.texts), args.num_texts):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
