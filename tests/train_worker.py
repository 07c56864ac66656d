"""Many ``plugin.train`` runs in one multi-process job: ``torchrun --standalone --nproc_per_node 2
tests/train_worker.py JOBS.json`` (or under ``accelerate launch``).

JOBS.json is a list of ``{"name", "argv", "cwd"}``, optionally led by ``{"engines", "out"}``: tests/engine_worker.py's
one-step checks, run first over the same process group. Each rank runs every job in turn through
``plugin.train.main(argv)`` (the command's own code, as ``-m plugin.train`` runs it) in ``cwd``, with its stdout and
stderr in ``<name>.rank<R>.out`` / ``.err`` beside JOBS.json. Rank 0 writes ``<JOBS>.results.json``: per job the
exit status, the engine accelerate set up for it and its seconds. One launch instead of one per run: a launch's
start-up (two processes importing the stack) was most of each small run's time. Between jobs the process-wide state
transformers and accelerate keep (the DeepSpeed config of the last Trainer, accelerate's shared state) is reset with
their own test hooks, so each job starts as a fresh launch would; the process group stays up.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path


def _run(job: dict, folder: Path, rank: int) -> tuple[int, str | None]:
    from plugin.train import main

    out, err = (open(folder / f"{job['name']}.rank{rank}.{kind}", "w") for kind in ("out", "err"))
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
    cwd = os.getcwd()
    try:
        os.chdir(job["cwd"])
        try:
            code = main(job["argv"]) or 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # noqa: BLE001 - recorded for the test, and the next job still runs
            traceback.print_exc()
            code = 1
        return code, _engine()
    finally:
        os.chdir(cwd)
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        out.close(), err.close()
        _reset_process_state()


def _engine() -> str | None:
    """What the job's Trainer ran on, as accelerate set it up: "MULTI_CPU" (DDP), "DEEPSPEED zero3", ..."""
    from accelerate.state import AcceleratorState

    if not AcceleratorState._shared_state:
        return None
    state = AcceleratorState()
    plugin = state.deepspeed_plugin
    return f"{state.distributed_type.value}" + (f" zero{plugin.zero_stage}" if plugin is not None else "")


def _reset_process_state() -> None:
    from accelerate.state import AcceleratorState, GradientState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    gc.collect()


def main(jobs_file: str) -> None:
    import torch.distributed as dist

    jobs_path = Path(jobs_file)
    jobs = json.loads(jobs_path.read_text())
    rank = int(os.environ.get("RANK", "0"))
    results = {}
    if jobs and "engines" in jobs[0]:  # tests/engine_worker.py's checks first, in the same process group
        import engine_worker

        spec = jobs.pop(0)
        start = time.time()
        engine_worker.main(spec["engines"], spec["out"], keep_process_group=True)
        results["engines"] = {"rc": 0, "engine": None, "seconds": round(time.time() - start, 1)}
    for job in jobs:
        start = time.time()
        code, engine = _run(job, jobs_path.parent, rank)
        results[job["name"]] = {"rc": code, "engine": engine, "seconds": round(time.time() - start, 1)}
        if dist.is_initialized():
            dist.barrier()
    if rank == 0:
        jobs_path.with_suffix(".results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
