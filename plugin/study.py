"""``python -m plugin.study CONFIG``: every method on the same data and budget, one results table with paired
differences and a plot; rerunning continues an interrupted study (``plugin.experiments.study``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .experiments.study import run_study
from .utils.errors import exits_cleanly_on_user_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plugin.study", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("config", help="study YAML (configs/study_smollm2.yaml: causal LM; configs/study_glue_minilm.yaml: "
                                  "GLUE classification)")
    p.add_argument("--only", help="run only ids containing this text (e.g. __s1, mor_n8); the table covers every "
                   "finished run")
    return p


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_study(Path(args.config), args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
